"""One container of a local pod as a process: its own root built from the host's, its volumes at the
mount paths the pod spec names, and the pod's network namespace.

    python -m modeldeploy_dev.sandbox run SPEC.json   # exec the container's command
    python -m modeldeploy_dev.sandbox pause           # hold a pod's network namespace

`run` does what a container runtime does for our images, with the host's files standing in for the
image (the "image" is this machine's Python environment, see docs/local-pods.md):

1. joins the pod's network namespace (held by the pod's `pause` process, as in a real pod),
2. enters a new mount namespace and builds a root on a tmpfs: every top-level directory of the host
   bind-mounted, a minimal /dev, and each volume bind-mounted at its `mountPath` (directories that do
   not exist on the host are made inside the namespace, never on the host),
3. makes the root read-only when the container asks for `readOnlyRootFilesystem`,
4. chroots there and execs the command with exactly the pod's environment.

So what the renderer writes (paths in args and env, `/dev/termination-log`, `/var/run/...`) is what
runs; a wrong mount path fails the way it fails in a real pod. It needs root (CAP_SYS_ADMIN) for the
namespaces; `available()` says whether this machine can.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import posixpath
import shutil
import signal
import socket
import struct
import sys
from pathlib import Path
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
EXIT_START_FAILED = 128  # what a runtime reports when the command cannot be started (StartError)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(path: str, nstype: int) -> None:
    """Move the calling thread into the namespace at `path` (per thread for network namespaces)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), f"setns {path}")
    finally:
        os.close(fd)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def die_with_parent() -> None:
    """SIGKILL this process when the kubelet that started it goes away: nothing outlives the node."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def available() -> str | None:
    """None when local pods can run here, else why not (one sentence)."""
    if sys.platform != "linux":
        return "local pods need Linux namespaces"
    if os.geteuid() != 0:
        return "local pods need root (mount and network namespaces); run the kubelet as root"
    return None


# --- the pod's network namespace ------------------------------------------------------------------------


def loopback_up() -> None:
    """`ip link set lo up` without needing `ip`: a new network namespace starts with lo down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req + b"\0" * 22)[:18])[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP) + b"\0" * 22)


def pause() -> int:
    """Hold a fresh network namespace (only loopback, up) until SIGTERM, like a pod's pause container."""
    die_with_parent()
    unshare(CLONE_NEWNET)
    loopback_up()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    while True:
        signal.pause()


# --- the container's root ---------------------------------------------------------------------------------


class RootBuilder:
    """Builds the container's root under `root`; `ours` are directories on tmpfs we may create in."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.ours: set[str] = set()
        self.volumes: list[str] = []  # real paths of the volume mounts: mount points below them are made in them
        self.root_mounts: list[str] = []  # made read-only for readOnlyRootFilesystem

    def inside(self, cpath: str) -> str:
        return self.root + cpath if cpath != "/" else self.root

    def replicate(self, host: str, dst: str) -> None:
        """Make `dst` show the host's `host` entry: symlink copied, directory or file bind-mounted."""
        if os.path.islink(host):
            os.symlink(os.readlink(host), dst)
        elif os.path.isdir(host):
            os.mkdir(dst)
            mount(host, dst, None, MS_BIND | MS_REC)
            self.root_mounts.append(dst)
        elif os.path.isfile(host):
            Path(dst).touch()
            mount(host, dst, None, MS_BIND)
            self.root_mounts.append(dst)

    def build(self, skip_top: set[str]) -> None:
        os.makedirs(self.root, exist_ok=True)
        mount("tmpfs", self.root, "tmpfs", 0, "mode=755")
        self.ours.add(self.root)
        self.root_mounts.append(self.root)
        for name in sorted(os.listdir("/")):
            if name in ("dev", *skip_top):
                continue
            self.replicate("/" + name, self.inside("/" + name))
        dev = self.inside("/dev")
        os.mkdir(dev)
        mount("tmpfs", dev, "tmpfs", 0, "mode=755")
        self.ours.add(dev)
        for name in DEVICES:
            if os.path.exists(f"/dev/{name}"):
                Path(dev, name).touch()
                mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1")):
            os.symlink(target, f"{dev}/{name}")
        os.symlink("/proc/self/fd/2", f"{dev}/stderr")
        os.mkdir(f"{dev}/shm")
        mount("tmpfs", f"{dev}/shm", "tmpfs", 0, "mode=1777")

    def shadow(self, cdir: str) -> None:
        """Cover a host directory with a tmpfs holding the same entries, so a mount point can be made."""
        dst = self.inside(cdir)
        entries = sorted(os.listdir(cdir))
        mount("tmpfs", dst, "tmpfs", 0, "mode=755")
        self.ours.add(dst)
        self.root_mounts.append(dst)
        for name in entries:
            self.replicate(posixpath.join(cdir, name), posixpath.join(dst, name))

    def resolve(self, cpath: str) -> str:
        """`cpath` with the symlinks of its parent directories resolved inside the container's root."""
        parts = [p for p in cpath.split("/") if p]
        done = "/"
        for _ in range(64):
            if not parts:
                return done
            nxt = posixpath.join(done, parts[0])
            host = self.inside(nxt)
            if os.path.islink(host) and len(parts) > 1:
                link = os.readlink(host)
                target = link if link.startswith("/") else posixpath.join(done, link)
                parts = [p for p in posixpath.normpath(target).split("/") if p] + parts[1:]
                done = "/"
                continue
            done = nxt
            parts = parts[1:]
        raise OSError(f"{cpath}: too many levels of symbolic links")

    def mountpoint(self, cpath: str, is_file: bool) -> str:
        """Make `cpath` exist inside the root (a directory, or a file for a file mount); its real path."""
        cpath = self.resolve(cpath)
        parts = [p for p in cpath.split("/") if p]
        cur = "/"
        for i, part in enumerate(parts):
            nxt = posixpath.join(cur, part)
            real = self.inside(nxt)
            last = i == len(parts) - 1
            if not os.path.lexists(real):
                parent = self.inside(cur)
                in_volume = any(parent == v or parent.startswith(v + "/") for v in self.volumes)
                if parent not in self.ours and not in_volume:
                    self.shadow(cur)
                if last and is_file:
                    Path(real).touch()
                else:
                    os.mkdir(real)
                    self.ours.add(real)
            cur = nxt
        return self.inside(cpath)


def run(spec: dict[str, Any]) -> int:
    """Set up the container as `spec` says and exec its command (returns only on failure to start)."""
    die_with_parent()
    argv: list[str] = spec["argv"]
    env: dict[str, str] = spec["env"]
    try:
        if spec.get("netns"):
            setns(spec["netns"], CLONE_NEWNET)
        unshare(CLONE_NEWNS)
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        builder = RootBuilder(spec["root"])
        mounts = sorted(spec["mounts"], key=lambda m: m["target"].count("/"))
        top = {m["target"].strip("/") for m in mounts if m["target"].strip("/") and "/" not in m["target"].strip("/")}
        builder.build(top)
        for m in mounts:
            is_file = os.path.isfile(m["source"])
            real = builder.mountpoint(m["target"], is_file)
            mount(m["source"], real, None, MS_BIND | MS_REC)
            builder.volumes.append(real)
            if m.get("readOnly"):
                mount(None, real, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        # The "image" (this machine's Python environment) must stay visible where a volume covers it, e.g.
        # a checkout under /tmp while the pod mounts an emptyDir at /tmp: bound again, read-only, on top.
        for path in spec.get("imagePaths") or ():
            if any(path == t or path.startswith(t.rstrip("/") + "/") for t in (m["target"] for m in mounts)):
                real = builder.mountpoint(path, is_file=False)
                mount(path, real, None, MS_BIND | MS_REC)
                mount(None, real, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        if spec.get("readOnlyRoot"):
            for real in reversed(builder.root_mounts):
                mount(None, real, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        os.chroot(builder.root)
        os.chdir(spec.get("workingDir") or "/")
    except OSError as exc:
        print(f"container runtime: cannot set up the container: {exc}", file=sys.stderr, flush=True)
        return EXIT_START_FAILED
    exe = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH", ""))
    if not exe:
        print(f'exec: "{argv[0]}": executable file not found in $PATH', file=sys.stderr, flush=True)
        return EXIT_START_FAILED
    try:
        os.execve(exe, argv, env)
    except OSError as exc:
        print(f'exec: "{argv[0]}": {exc.strerror}', file=sys.stderr, flush=True)
    return EXIT_START_FAILED


def main(argv: list[str]) -> int:
    if argv[:1] == ["pause"]:
        return pause()
    if len(argv) == 2 and argv[0] == "run":
        return run(json.loads(Path(argv[1]).read_text()))
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main(sys.argv[1:]))
