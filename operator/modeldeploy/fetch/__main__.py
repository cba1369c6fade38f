"""`python -m modeldeploy.fetch --uri URI --dest DIR [--file F]... [--sha256 HEX]`.

DIR is `locate(uri).directory` (for https:// it is the file path itself). With `--file`, only those
files are fetched and `--sha256` applies to the first one (model.file); without, the whole repository
or prefix is. Exit codes: 0 done (or nothing to do), 1 the fetch failed, 2 bad arguments or a local path
that does not exist. Logs are JSON lines; the failure sentence also goes to stderr and the termination log.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from modeldeploy.fetch.clients import REPO_CLIENTS, driver, drop_unresumable_partials, prepare_environment
from modeldeploy.fetch.credentials import plaintext_refusal
from modeldeploy.fetch.http import MARKER_DIR, FetchError, already_present, download, sha256_of
from modeldeploy.fetch.progress import DiskProgress, FileReporter, Reporter
from modeldeploy.fetch.sources import RemoteFile, source_for
from modeldeploy.model_paths import ModelUriError, locate

TERMINATION_LOG = "/dev/termination-log"
REPO_MARKER = "complete.json"


_LOG_LOCK = threading.Lock()


def log(record: dict[str, Any]) -> None:
    """One JSON line per record, whole even when the progress thread logs at the same moment."""
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    with _LOG_LOCK:
        sys.stdout.write(line)
        sys.stdout.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modeldeploy.fetch", description="Fetch model weights.")
    parser.add_argument("--uri", required=True)
    parser.add_argument("--dest", required=True, help="locate(uri).directory (a file path for https://)")
    parser.add_argument("--file", action="append", default=[], help="a file inside the repository (repeatable)")
    parser.add_argument("--sha256", help="expected SHA-256 of the single weights file")
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=float(os.environ.get("MODELDEPLOY_FETCH_PROGRESS_INTERVAL", "10")),
        help="seconds between progress lines",
    )
    parser.add_argument("--attempts", type=int, default=int(os.environ.get("MODELDEPLOY_FETCH_ATTEMPTS", "8")))
    parser.add_argument(
        "--backoff", type=float, default=float(os.environ.get("MODELDEPLOY_FETCH_BACKOFF", "2")), help=argparse.SUPPRESS
    )
    parser.add_argument("--report-claim", metavar="NAMESPACE/NAME", help="annotate this PVC with the progress")
    parser.add_argument("--progress-file", type=Path, help="write the latest progress record here")
    parser.add_argument("--capacity", type=int, help="bytes the volume was sized for (refuse larger models)")
    parser.add_argument(
        "--list-only",
        action="store_true",
        help="download nothing: end with the total bytes of what would be downloaded (sizes the shared cache)",
    )
    return parser


class UsageError(Exception):
    """Exit 2: the arguments cannot work."""


def _repo_marker(dest: Path) -> Path:
    return dest / MARKER_DIR / REPO_MARKER


def _marker_record(dest: Path, wanted: list[str], sha256: str | None) -> dict[str, Any] | None:
    """The completion marker when it covers `wanted` (all files when empty) and they are still intact."""
    try:
        marker = json.loads(_repo_marker(dest).read_text())
        files = {f["path"]: f for f in marker["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if wanted and (any(f not in files for f in wanted) or (marker.get("subset") and set(wanted) != set(files))):
        return None
    if not wanted and marker.get("subset"):
        return None
    if not all(_intact(dest / f["path"], f["size"]) for f in files.values()):
        return None
    if sha256 and wanted and files[wanted[0]].get("sha256") != sha256.lower():
        return None
    return marker


def _intact(path: Path, size: int) -> bool:
    try:
        return path.is_file() and path.stat().st_size == size
    except OSError:
        return False


def _write_marker(dest: Path, uri: str, revision: str | None, files: list[dict[str, Any]], subset: bool) -> None:
    marker = _repo_marker(dest)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"uri": uri, "revision": revision, "subset": subset, "files": files}, sort_keys=True))
    os.replace(tmp, marker)


def _check_local(args: argparse.Namespace, directory: str) -> int:
    base = Path(args.dest or directory)
    wanted = [base / f for f in args.file] if args.file else [base]
    missing = [str(p) for p in wanted if not p.exists()]
    if missing:
        raise UsageError(f"The model path {', '.join(missing)} does not exist on the mounted volume.")
    log({"event": "fetch.local", "paths": [str(p) for p in wanted], "downloaded": False})
    return 0


def _check_space(dest: Path, total: int | None, capacity: int | None = None) -> None:
    """Refuse up front what cannot fit, instead of failing at 90% after twenty minutes.

    `capacity` is the size the volume was asked for (the shared cache's claim): a provisioner may hand
    out more, but a model larger than the claim the user sized is refused all the same.
    """
    if not total:
        return
    dest.mkdir(parents=True, exist_ok=True)
    present = _present_bytes(dest)
    needed = total - present
    free = shutil.disk_usage(dest).free
    if capacity is not None:
        free = min(free, max(capacity - present, 0))
    if needed > free:
        raise FetchError(
            f"No space left on the cache volume: the model needs {needed} more bytes and {free} are free "
            "(give the cache a larger size)."
        )


def _present_bytes(dest: Path) -> int:
    from modeldeploy.fetch.progress import bytes_under

    return bytes_under(dest)


def _verify_first(dest: Path, name: str, sha256: str | None) -> str | None:
    """model.sha256 against the downloaded file; a mismatch removes it (the clients trust their etags)."""
    if not sha256:
        return None
    got = sha256_of(dest / name)
    if got != sha256.lower():
        (dest / name).unlink()
        raise FetchError(
            f"Checksum mismatch for {name}: expected sha256 {sha256.lower()}, got {got}; "
            "the download was removed (check model.sha256 or the source)."
        )
    log({"event": "fetch.verified", "file": str(dest / name), "sha256": got})
    return got


def list_only(args: argparse.Namespace) -> dict[str, Any]:
    """The total bytes of exactly what `fetch` would download (same revision, same files), nothing written.

    The shared cache's listing Job (docs/model-cache.md) sizes the claim from it. A single https:// file
    lists no size here (total 0): the operator then uses its default size.
    """
    try:
        location = locate(args.uri)
    except ModelUriError as exc:
        raise UsageError(str(exc)) from None
    if not location.needs_fetch or location.scheme in ("https", "http"):
        record: dict[str, Any] = {"phase": "Listed", "files": 0, "total": 0}
    elif location.scheme in REPO_CLIENTS:
        listing = driver(location.scheme).resolve(args.uri, args.file or None)
        record = {"phase": "Listed", "files": len(listing.files), "total": listing.total, "revision": listing.commit}
    else:
        source = source_for(args.uri)
        try:
            listed = source.list_files()
        finally:
            source.close()
        if args.file:
            by_path = {f.path: f for f in listed}
            missing = [f for f in args.file if f not in by_path]
            if missing:
                raise FetchError(f"{args.uri}: no file {', '.join(missing)} in the listing (check model.file).")
            listed = [by_path[f] for f in args.file]
        record = {"phase": "Listed", "files": len(listed), "total": sum(f.size or 0 for f in listed)}
    log({"event": "fetch.listed", **record})
    return record


def fetch(args: argparse.Namespace, reporter: Reporter) -> dict[str, Any]:
    """Fetch and return the final record (phase Ready, bytes, total, revision)."""
    try:
        location = locate(args.uri)
    except ModelUriError as exc:
        raise UsageError(str(exc)) from None
    if not location.needs_fetch:
        _check_local(args, location.directory)
        return {"phase": "Ready", "downloaded": False}
    if args.sha256 and (len(args.sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in args.sha256)):
        raise UsageError(f"--sha256 {args.sha256!r} is not a 64-digit hex SHA-256.")
    dest = Path(args.dest)
    if location.scheme in ("https", "http"):
        return _fetch_url(args, dest, reporter)

    # First, without any network: is everything already here?
    marker = _marker_record(dest, args.file, args.sha256)
    if marker is not None:
        size = sum(f["size"] for f in marker["files"])
        log({"event": "fetch.present", "directory": str(dest), "revision": marker.get("revision"), "downloaded": False})
        return {"phase": "Ready", "bytes": size, "total": size, "revision": marker.get("revision"), "downloaded": False}

    started = time.monotonic()
    if location.scheme in REPO_CLIENTS:
        client = driver(location.scheme)
        listing = client.resolve(args.uri, args.file or None)
        files, revision = listing.files, listing.commit
        log({"event": "fetch.listing", "files": len(files), "bytes": listing.total, "revision": revision})
        if location.scheme == "hf":
            drop_unresumable_partials(dest, log)
        _check_space(dest, listing.total, args.capacity)
        with DiskProgress(dest, listing.total, **_progress(args, reporter, revision)):
            if location.scheme == "hf":
                client.download(listing, dest)
            else:
                client.download(listing, dest, log=log, whole=not args.file)
    else:
        files, revision = _fetch_source(args, dest, reporter)
    digest = _verify_first(dest, args.file[0], args.sha256) if args.file and location.scheme in REPO_CLIENTS else None
    recorded = []
    for i, f in enumerate(files):
        entry: dict[str, Any] = {"path": f.path, "size": (dest / f.path).stat().st_size}
        if i == 0 and args.file and args.sha256:
            entry["sha256"] = digest or args.sha256.lower()
        recorded.append(entry)
    _write_marker(dest, args.uri, revision, recorded, subset=bool(args.file))
    size = sum(f["size"] for f in recorded)
    log({"event": "fetch.complete", "files": len(recorded), "seconds": round(time.monotonic() - started, 2)})
    return {"phase": "Ready", "bytes": size, "total": size, "revision": revision, "downloaded": True}


def _progress(args: argparse.Namespace, reporter: Reporter, revision: str | None) -> dict[str, Any]:
    return {"interval": args.progress_interval, "log": log, "reporter": reporter, "revision": revision}


def _fetch_source(args: argparse.Namespace, dest: Path, reporter: Reporter) -> tuple[list[RemoteFile], str | None]:
    """s3:// through its listing and the resumable single-file download."""
    source = source_for(args.uri)
    options = dict(log=log, attempts=args.attempts, backoff=args.backoff)
    try:
        listed = source.list_files()
        if args.file:
            by_path = {f.path: f for f in listed}
            missing = [f for f in args.file if f not in by_path]
            if missing:
                raise FetchError(f"{args.uri}: no file {', '.join(missing)} in the listing (check model.file).")
            listed = [by_path[f] for f in args.file]
        total = sum(f.size or 0 for f in listed) or None
        log({"event": "fetch.listing", "files": len(listed), "bytes": total})
        _check_space(dest, total, args.capacity)
        with DiskProgress(dest, total, **_progress(args, reporter, None)):
            for i, remote in enumerate(listed):
                opener, name = source.opener(remote.path)
                sha = args.sha256 if (i == 0 and args.file) else remote.sha256
                download(opener, dest / remote.path, source=name, expected_size=remote.size, sha256=sha, **options)
    finally:
        source.close()
    return listed, None


def _fetch_url(args: argparse.Namespace, dest: Path, reporter: Reporter) -> dict[str, Any]:
    """https:// is one file: our resumable download, verified, with its own marker."""
    if already_present(dest, sha256=args.sha256):
        log({"event": "fetch.present", "file": str(dest), "downloaded": False})
        size = dest.stat().st_size
        return {"phase": "Ready", "bytes": size, "total": size, "downloaded": False}
    source = source_for(args.uri)
    part = dest.with_name(dest.name + ".part")

    def on_disk() -> int:
        return sum(p.stat().st_size for p in (dest, part) if p.is_file())

    progress = DiskProgress(dest, None, measure=on_disk, **_progress(args, reporter, None))
    try:
        opener, name = source.opener("")
        with progress:
            download(
                opener, dest, source=name, sha256=args.sha256, log=log, attempts=args.attempts, backoff=args.backoff
            )
    finally:
        source.close()
    size = dest.stat().st_size
    log({"event": "fetch.complete", "files": 1, "bytes": size})
    return {"phase": "Ready", "bytes": size, "total": size, "downloaded": True}


def _termination_message(text: str) -> None:
    try:
        with open(os.environ.get("MODELDEPLOY_TERMINATION_LOG", TERMINATION_LOG), "w", encoding="utf-8") as fh:
            fh.write(text[:4000])
    except OSError:
        pass


def _reporter(args: argparse.Namespace) -> Reporter:
    reporters: list[Reporter] = []
    if args.report_claim:
        from modeldeploy.fetch.report import ClaimReporter

        namespace, _, name = args.report_claim.partition("/")
        reporters.append(ClaimReporter(namespace, name, log=log, interval=args.progress_interval))
    if args.progress_file:
        reporters.append(FileReporter(args.progress_file))

    class _All(Reporter):
        def report(self, record: dict[str, Any]) -> None:
            for r in reporters:
                r.report(record)

    return _All()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prepare_environment(args.uri, Path(args.dest))
    reporter = _reporter(args)
    try:
        refusal = plaintext_refusal(args.uri, os.environ)  # before any request (docs/security.md "Credentials")
        if refusal:
            raise FetchError(refusal)
        if args.list_only:
            result = list_only(args)
            _termination_message(json.dumps(result, sort_keys=True))
            print(json.dumps(result, sort_keys=True), flush=True)
            return 0
        result = fetch(args, reporter)
    except UsageError as exc:
        code, message = 2, str(exc)
    except FetchError as exc:
        code, message = 1, str(exc)
    else:
        final = {k: v for k, v in result.items() if k != "downloaded"}
        reporter.report(final)
        _termination_message(json.dumps(final, sort_keys=True))
        return 0
    log({"event": "fetch.failed", "error": message})
    print(message, file=sys.stderr, flush=True)
    reporter.report({"phase": "Failed", "message": message})
    _termination_message(message)
    return code


if __name__ == "__main__":
    sys.exit(main())
