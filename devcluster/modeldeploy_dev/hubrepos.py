"""The repositories the local Hub server serves: files, commits, refs, and what the Hub says about each.

Kept apart from the HTTP handler so the answers (commit ids, ETags, LFS pointers, tree entries) are plain
data that tests can compare with what a client received. Everything is derived from file contents, so the
same files always give the same commit id: a client that pins a commit keeps working across restarts of
the server, as it would against the real Hub.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# What the Hub stores through Git LFS (its default .gitattributes) or because it is large. Those files
# answer with X-Linked-Etag (their sha256) and an `lfs` block in listings; small text files are plain
# git blobs whose ETag is the blob's git oid, as on the Hub.
LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".onnx", ".msgpack", ".h5", ".model", ".zip")
LFS_MIN_SIZE = 10 << 20
CHUNK = 1 << 20

FileSource = Path | bytes


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class HubFile:
    """One file of one commit: where its bytes are and the hashes the Hub API reports."""

    path: str
    source: FileSource
    size: int
    sha256: str
    lfs: bool

    @classmethod
    def of(cls, path: str, source: FileSource) -> HubFile:
        digest = hashlib.sha256()
        if isinstance(source, bytes):
            digest.update(source)
            size = len(source)
        else:
            source = Path(source)
            size = source.stat().st_size
            with source.open("rb") as fh:
                while block := fh.read(CHUNK):
                    digest.update(block)
        lfs = path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE
        return cls(path, source, size, digest.hexdigest(), lfs)

    @property
    def lfs_pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @property
    def git_oid(self) -> str:
        """The git blob id: of the LFS pointer for LFS files, of the content otherwise."""
        return _git_blob_oid(self.lfs_pointer if self.lfs else self.read(0, self.size))

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) — small reads only (the server streams big files through `open`)."""
        if isinstance(self.source, bytes):
            return self.source[start:end]
        with Path(self.source).open("rb") as fh:
            fh.seek(start)
            return fh.read(end - start)

    def tree_entry(self) -> dict[str, object]:
        entry: dict[str, object] = {"type": "file", "oid": self.git_oid, "size": self.size, "path": self.path}
        if self.lfs:
            pointer = self.lfs_pointer
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(pointer)}
        return entry

    def sibling(self, blobs: bool) -> dict[str, object]:
        entry: dict[str, object] = {"rfilename": self.path}
        if blobs:
            entry.update(size=self.size, blobId=self.git_oid)
            if self.lfs:
                entry["lfs"] = {"sha256": self.sha256, "size": self.size, "pointerSize": len(self.lfs_pointer)}
        return entry


@dataclass(frozen=True)
class Commit:
    sha: str
    files: dict[str, HubFile]

    def directories(self) -> set[str]:
        dirs: set[str] = set()
        for name in self.files:
            parts = name.split("/")[:-1]
            dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return dirs

    def tree(self, prefix: str, recursive: bool) -> list[dict[str, object]] | None:
        """Tree entries under `prefix` (files and directories, sorted); None when `prefix` is no directory."""
        prefix = prefix.strip("/")
        dirs = self.directories()
        if prefix and prefix not in dirs:
            return None
        base = f"{prefix}/" if prefix else ""

        def wanted(name: str) -> bool:
            return name.startswith(base) and (recursive or "/" not in name[len(base) :])

        entries: list[dict[str, object]] = [
            {"type": "directory", "oid": _git_blob_oid(d.encode()), "size": 0, "path": d}
            for d in sorted(dirs)
            if wanted(d)
        ]
        entries += [f.tree_entry() for name, f in sorted(self.files.items()) if wanted(name)]
        return entries


def commit_of(repo_id: str, files: Mapping[str, HubFile]) -> Commit:
    """A commit id that depends only on the repository's name and its files' paths and contents."""
    digest = hashlib.sha1(repo_id.encode(), usedforsecurity=False)
    for name in sorted(files):
        digest.update(f"\0{name}\0{files[name].sha256}".encode())
    return Commit(digest.hexdigest(), dict(files))


def files_of(spec: Mapping[str, FileSource] | Path | str) -> dict[str, HubFile]:
    """A mapping {path in repo: file or bytes}, or a directory whose files (recursively) make the repo."""
    if isinstance(spec, str | Path):
        root = Path(spec)
        if not root.is_dir():
            raise ValueError(f"{root} is not a directory")
        mapping: dict[str, FileSource] = {
            p.relative_to(root).as_posix(): p
            for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        }
    else:
        mapping = dict(spec)
    return {name.strip("/"): HubFile.of(name.strip("/"), src) for name, src in mapping.items()}


@dataclass
class HubRepo:
    """A model repository: its commits, the refs (branches, tags) naming them, and its gate."""

    repo_id: str
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    gated_token: str | None = None  # files need `Authorization: Bearer <gated_token>`; listings stay public
    xet: bool = False  # its LFS files are Xet-backed (served through the local CAS, xetcas.py)

    def add(self, files: Mapping[str, HubFile], revision: str = "main") -> Commit:
        commit = commit_of(self.repo_id, files)
        self.commits[commit.sha] = commit
        self.refs[revision] = commit.sha
        return commit

    def resolve(self, revision: str) -> Commit | None:
        """A branch or tag name, or a full commit id, to its commit."""
        sha = self.refs.get(revision, revision)
        return self.commits.get(sha)

    @property
    def main(self) -> Commit:
        return self.resolve("main") or next(iter(self.commits.values()))
