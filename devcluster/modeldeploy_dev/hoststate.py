"""What a real node changes on the host, recorded before it starts and put back after it stops.

A kubelet, containerd, the CNI plugins and kube-proxy all change the machine they run on: the kubelet
sets kernel sysctls (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops, ...), adds iptables
chains that `kube-proxy --cleanup` does not remove, bind-mounts its root directory and makes `kubepods`
cgroups in every controller; the bridge plugin turns on ip_forward; libcni and the kubelet write to
fixed paths (/var/lib/cni, /var/log/containers). A developer's machine must be left exactly as found,
so the snapshot covers each of these kinds of state and restore() undoes every difference it can see
(docs/real-node.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Sysctl trees a node changes. Counters and values the kernel moves on its own are left out.
SYSCTL_TREES = ("kernel", "vm", "net/ipv4", "net/ipv6/conf/all", "net/ipv6/conf/default", "net/bridge")
SYSCTL_VOLATILE = (
    "kernel/random/",
    "kernel/ns_last_pid",
    "kernel/pty/nr",
    "kernel/tainted",
    "kernel/hung_task",
    "net/ipv4/tcp_mem",
    "net/ipv4/udp_mem",
    "vm/stat_refresh",
    "vm/drop_caches",
    "vm/compact_memory",
)
# Paths that the kubelet, containerd and libcni hard-code (not under the node's own directory).
FIXED_PATHS = (
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/run/containerd",
    "/run/netns",
    "/var/run/netns",
    "/var/lib/kubelet",
    "/etc/kubernetes",
    "/run/runc",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
IPTABLES = ("iptables", "ip6tables")
TABLES = ("filter", "nat", "mangle", "raw")

Log = Callable[[str], None]


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)


def _writable_sysctls() -> dict[str, str]:
    values: dict[str, str] = {}
    base = Path("/proc/sys")
    for tree in SYSCTL_TREES:
        root = base / tree
        if not root.exists():
            continue
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath) / name
                key = str(path.relative_to(base))
                if key.startswith(SYSCTL_VOLATILE) or not os.access(path, os.W_OK):
                    continue
                with contextlib.suppress(OSError):
                    values[key] = path.read_text()
    return values


def _nft_tables() -> list[str]:
    """`nft list tables` lines ("table ip filter"); empty where nft is missing."""
    if shutil.which("nft") is None:
        return []
    proc = _run(["nft", "list", "tables"])
    return sorted(line.strip() for line in proc.stdout.splitlines() if line.strip()) if proc.returncode == 0 else []


def _iptables_rules() -> dict[str, str]:
    """`iptables-save` per family, without its timestamps and packet counters (which move on their own)."""
    rules = {}
    for tool in IPTABLES:
        if shutil.which(f"{tool}-save"):
            lines = _run([f"{tool}-save"]).stdout.splitlines()
            kept = [re.sub(r"\[\d+:\d+\]$", "[0:0]", line) for line in lines if not line.startswith("#")]
            rules[tool] = "\n".join(kept) + "\n" if kept else ""
    return rules


def _mounts() -> list[str]:
    """Mount points in mount order (mountinfo's fifth field)."""
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def _links() -> list[str]:
    proc = _run(["ip", "-o", "link", "show"])
    return sorted(line.split(":")[1].strip().split("@")[0] for line in proc.stdout.splitlines() if ":" in line)


def _cgroup_dirs() -> list[str]:
    """Cgroup directories two levels deep in every hierarchy (the kubelet's `kubepods` lives at one)."""
    found = []
    if not CGROUP_ROOT.is_dir():
        return found
    for hierarchy in CGROUP_ROOT.iterdir():
        with contextlib.suppress(OSError):
            for child in hierarchy.iterdir():
                if child.is_dir():
                    found.append(str(child))
    return sorted(found)


@dataclass
class HostState:
    """One snapshot of the host state a real node touches."""

    sysctls: dict[str, str] = field(default_factory=dict)
    iptables: dict[str, str] = field(default_factory=dict)
    nft_tables: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # those of FIXED_PATHS that existed

    @classmethod
    def capture(cls) -> HostState:
        return cls(
            sysctls=_writable_sysctls(),
            iptables=_iptables_rules(),
            nft_tables=_nft_tables(),
            mounts=_mounts(),
            links=_links(),
            cgroups=_cgroup_dirs(),
            paths=[p for p in FIXED_PATHS if os.path.lexists(p)],
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> HostState:
        return cls(**json.loads(path.read_text()))

    def differences(self, now: HostState) -> list[str]:
        """What differs between this snapshot and `now`, one line each (for tests and the teardown log)."""
        out = [f"sysctl {k}: {self.sysctls[k].strip()} -> {v.strip()}" for k, v in diff_sysctls(self, now).items()]
        out += [f"{tool} rules changed" for tool in IPTABLES if self.iptables.get(tool) != now.iptables.get(tool)]
        out += [f"new nft {t}" for t in sorted(set(now.nft_tables) - set(self.nft_tables))]
        out += [f"new mount {m}" for m in now.mounts if m not in set(self.mounts)]
        out += [f"new link {name}" for name in sorted(set(now.links) - set(self.links))]
        out += [f"new cgroup {c}" for c in sorted(set(now.cgroups) - set(self.cgroups))]
        out += [f"new path {p}" for p in sorted(set(now.paths) - set(self.paths))]
        return out

    def restore(self, log: Log = lambda _m: None) -> list[str]:
        """Undo every difference between the host now and this snapshot; what could not be undone."""
        now = HostState.capture()
        for mount in reversed(now.mounts):
            if mount not in set(self.mounts):
                _run(["umount", "-l", mount])
        for link in sorted(set(now.links) - set(self.links)):
            _run(["ip", "link", "delete", link])
        for directory in sorted(set(now.cgroups) - set(self.cgroups)):
            remove_cgroup_tree(Path(directory))
        for tool, rules in self.iptables.items():
            if now.iptables.get(tool) != rules:
                _restore_iptables(tool, rules)
        for table in sorted(set(now.nft_tables) - set(self.nft_tables)):
            _run(["nft", "delete", *table.split()])
        for path in sorted(set(_existing(FIXED_PATHS)) - set(self.paths)):
            _remove_path(Path(path))
        for key in diff_sysctls(self, now):
            with contextlib.suppress(OSError):
                (Path("/proc/sys") / key).write_text(self.sysctls[key])
        left = self.differences(HostState.capture())
        for line in left:
            log(f"host not as found: {line}")
        return left


def diff_sysctls(before: HostState, after: HostState) -> dict[str, str]:
    return {k: v for k, v in after.sysctls.items() if k in before.sysctls and before.sysctls[k] != v}


def _existing(paths: Iterable[str]) -> list[str]:
    return [p for p in paths if os.path.lexists(p)]


def _remove_path(path: Path) -> None:
    """Remove a directory tree left by the node, unmounting what is mounted inside it first."""
    for mount in reversed(_mounts()):
        if mount == str(path) or mount.startswith(f"{path}/"):
            _run(["umount", "-l", mount])
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _restore_iptables(tool: str, rules: str) -> None:
    """Put back the saved rules of every table; tables created since are emptied of rules and chains."""
    _run([f"{tool}-restore"], stdin=rules)
    saved = {line[1:].strip() for line in rules.splitlines() if line.startswith("*")}
    for table in TABLES:
        if table not in saved:
            _run([tool, "-t", table, "-F"])
            _run([tool, "-t", table, "-X"])


def kill_cgroup_tree(directory: Path) -> int:
    """SIGKILL every process in a cgroup tree (containers the runtime left behind); how many.

    The tree changes under the walk: the runtime removes a container's cgroup as its processes die. So
    the walk is `os.walk`, which skips a directory gone before it is listed (`Path.rglob` raised
    FileNotFoundError there, and took a demo's teardown down with it), and a file gone before it is read
    is skipped too."""
    killed = 0
    listed = [Path(dirpath) / "cgroup.procs" for dirpath, _dirs, files in os.walk(directory) if "cgroup.procs" in files]
    for procs in sorted(listed, reverse=True):
        with contextlib.suppress(OSError):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid), 9)
                    killed += 1
    return killed


def remove_cgroup_tree(directory: Path) -> None:
    """rmdir a cgroup tree bottom-up (cgroupfs removes a directory only once its children are gone)."""
    if not directory.is_dir():
        return
    kill_cgroup_tree(directory)
    for dirpath, _dirs, _files in sorted(os.walk(directory), key=lambda w: -w[0].count("/")):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)
