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
import sys
import time
from pathlib import Path
from typing import Any

from modeldeploy.fetch.http import MARKER_DIR, FetchError, already_present, download
from modeldeploy.fetch.sources import RemoteFile, source_for
from modeldeploy.model_paths import ModelUriError, locate

TERMINATION_LOG = "/dev/termination-log"
REPO_MARKER = "complete.json"


def log(record: dict[str, Any]) -> None:
    print(json.dumps(record, sort_keys=True, default=str), flush=True)


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
    return parser


class UsageError(Exception):
    """Exit 2: the arguments cannot work."""


def _repo_marker(dest: Path) -> Path:
    return dest / MARKER_DIR / REPO_MARKER


def _repo_present(dest: Path) -> bool:
    """A whole repository fetched before: every listed file still there with its size."""
    try:
        files = json.loads(_repo_marker(dest).read_text())["files"]
    except (OSError, ValueError, KeyError):
        return False
    return all(already_present(dest / f["path"], f["size"]) for f in files)


def _check_local(args: argparse.Namespace, directory: str) -> int:
    base = Path(args.dest or directory)
    wanted = [base / f for f in args.file] if args.file else [base]
    missing = [str(p) for p in wanted if not p.exists()]
    if missing:
        raise UsageError(f"The model path {', '.join(missing)} does not exist on the mounted volume.")
    log({"event": "fetch.local", "paths": [str(p) for p in wanted], "downloaded": False})
    return 0


def fetch(args: argparse.Namespace) -> int:
    try:
        location = locate(args.uri)
    except ModelUriError as exc:
        raise UsageError(str(exc)) from None
    if not location.needs_fetch:
        return _check_local(args, location.directory)
    if args.sha256 and (len(args.sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in args.sha256)):
        raise UsageError(f"--sha256 {args.sha256!r} is not a 64-digit hex SHA-256.")
    dest = Path(args.dest)
    single_file = location.scheme in ("https", "http")
    options = dict(log=log, attempts=args.attempts, backoff=args.backoff, progress_interval=args.progress_interval)

    # First, without any network: is everything already here?
    if single_file:
        if already_present(dest, sha256=args.sha256):
            log({"event": "fetch.present", "file": str(dest), "downloaded": False})
            return 0
    elif args.file:
        if all(already_present(dest / f, sha256=args.sha256 if i == 0 else None) for i, f in enumerate(args.file)):
            log({"event": "fetch.present", "files": args.file, "downloaded": False})
            return 0
    elif _repo_present(dest):
        log({"event": "fetch.present", "directory": str(dest), "downloaded": False})
        return 0

    started = time.monotonic()
    source = source_for(args.uri)
    fetched = 0
    try:
        if single_file:
            opener, name = source.opener("")
            fetched += download(opener, dest, source=name, sha256=args.sha256, **options)
        elif args.file:
            for i, path in enumerate(args.file):
                opener, name = source.opener(path)
                sha = args.sha256 if i == 0 else None
                fetched += download(opener, dest / path, source=name, sha256=sha, **options)
        else:
            files: list[RemoteFile] = source.list_files()
            log({"event": "fetch.listing", "files": len(files), "bytes": sum(f.size or 0 for f in files)})
            for remote in files:
                opener, name = source.opener(remote.path)
                fetched += download(
                    opener, dest / remote.path, source=name, expected_size=remote.size, sha256=remote.sha256, **options
                )
            marker = _repo_marker(dest)
            marker.parent.mkdir(parents=True, exist_ok=True)
            listing = [{"path": f.path, "size": (dest / f.path).stat().st_size} for f in files]
            marker.write_text(json.dumps({"uri_scheme": location.scheme, "files": listing}))
    finally:
        source.close()
    log({"event": "fetch.complete", "downloaded_files": fetched, "seconds": round(time.monotonic() - started, 2)})
    return 0


def _termination_message(text: str) -> None:
    try:
        with open(os.environ.get("MODELDEPLOY_TERMINATION_LOG", TERMINATION_LOG), "w", encoding="utf-8") as fh:
            fh.write(text[:4000])
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return fetch(args)
    except UsageError as exc:
        code, message = 2, str(exc)
    except FetchError as exc:
        code, message = 1, str(exc)
    log({"event": "fetch.failed", "error": message})
    print(message, file=sys.stderr, flush=True)
    _termination_message(message)
    return code


if __name__ == "__main__":
    sys.exit(main())
