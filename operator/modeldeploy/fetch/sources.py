"""Where s3:// and https:// files come from, and how they are listed (hf:// is hub.py, modelscope:// modelscope.py).

Every scheme here reduces to "a list of (relative path, size, sha256) and a way to open one from a byte
offset", so the resumable, verified download in `http.py` is written once. Credentials are read from the
environment (the Secret named in `model.credentialsSecret` is mounted as env vars) and only ever go into
request headers or the S3 client, never into argv or the log.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from modeldeploy.fetch.http import FetchError, Opener, Response, Retryable, http_opener


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: its path inside the repository/prefix and what the listing says about it."""

    path: str
    size: int | None = None
    sha256: str | None = None


def safe_relpath(path: str) -> str:
    """A listed path must stay inside the destination directory."""
    norm = posixpath.normpath(path.lstrip("/"))
    if norm.startswith("..") or norm in (".", ""):
        raise FetchError(f"Refusing the listed path {path!r}: it leaves the model directory.")
    return norm


def parse_repo(uri: str) -> tuple[str, str]:
    """hf://org/repo@rev → ("org/repo", "rev"), with `main` when no revision is given."""
    parsed = urlparse(uri)
    repo, _, rev = (parsed.netloc + parsed.path).partition("@")
    return repo.strip("/"), rev or "main"


class Source:
    """Base: list files, open one at an offset."""

    def list_files(self) -> list[RemoteFile]:
        raise NotImplementedError

    def opener(self, path: str) -> tuple[Opener, str]:
        """The opener for `path` and the URL-like name used in logs (redacted there)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class HttpSource(Source):
    """Anything fetched with plain HTTP GETs through one httpx client."""

    def __init__(self, token: str | None) -> None:
        import httpx

        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.headers["User-Agent"] = "modeldeploy-fetch/0.1"
        # httpx drops Authorization when a redirect leaves the origin (hub → CDN), so tokens stay home.
        self.client = httpx.Client(timeout=httpx.Timeout(30.0, read=120.0))

    def close(self) -> None:
        self.client.close()


class DirectUrl(HttpSource):
    """https://host/path/file: one file; HTTP_BEARER_TOKEN is sent as a bearer token when set."""

    def __init__(self, uri: str) -> None:
        super().__init__(os.environ.get("HTTP_BEARER_TOKEN"))
        self.url = uri

    def list_files(self) -> list[RemoteFile]:
        return [RemoteFile(posixpath.basename(urlparse(self.url).path))]

    def opener(self, path: str) -> tuple[Opener, str]:
        return http_opener(self.client, self.url, self.headers), self.url


class S3(Source):
    """s3://bucket/prefix through boto3 (credentials and AWS_ENDPOINT_URL from the environment)."""

    def __init__(self, uri: str) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise FetchError(
                "s3:// needs boto3, which this fetch image lacks; install modeldeploy[s3] or use the project's "
                "fetch image."
            ) from None
        parsed = urlparse(uri)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
        self.client = boto3.client("s3", endpoint_url=endpoint, config=Config(retries={"max_attempts": 5}))

    def list_files(self) -> list[RemoteFile]:
        from botocore.exceptions import BotoCoreError, ClientError

        files: list[RemoteFile] = []
        prefix = f"{self.prefix}/" if self.prefix else ""
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/"):
                        continue
                    files.append(RemoteFile(safe_relpath(key[len(prefix) :]), obj.get("Size")))
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", ""), error.get("Message", "")
            raise FetchError(
                f"s3://{self.bucket}/{prefix}: {code or exc}{f' ({message})' if message else ''} "
                "(check the URI and credentialsSecret)."
            ) from None
        except BotoCoreError as exc:  # botocore has already retried (max_attempts 5)
            raise FetchError(f"s3://{self.bucket}/{prefix}: {exc}.") from None
        if not files:
            raise FetchError(f"No objects under s3://{self.bucket}/{prefix}.")
        return files

    def opener(self, path: str) -> tuple[Opener, str]:
        key = f"{self.prefix}/{path}" if self.prefix else path
        name = f"s3://{self.bucket}/{key}"

        def open_at(offset: int) -> Response:
            from botocore.exceptions import BotoCoreError, ClientError

            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
            if offset:
                kwargs["Range"] = f"bytes={offset}-"
            try:
                obj = self.client.get_object(**kwargs)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code == "InvalidRange" and offset:
                    return Response(206, offset, offset, iter(()))
                raise FetchError(f"{name}: {code or exc} (check credentialsSecret and the URI).") from None
            except BotoCoreError as exc:
                raise Retryable(str(exc)) from None
            body = obj["Body"]
            total = None
            if "ContentRange" in obj:
                total = int(obj["ContentRange"].rsplit("/", 1)[1])
            elif "ContentLength" in obj:
                total = int(obj["ContentLength"])

            def chunks() -> Iterator[bytes]:
                try:
                    yield from body.iter_chunks(1 << 20)
                except BotoCoreError as exc:
                    raise Retryable(str(exc)) from None

            return Response(206 if offset else 200, offset, total, chunks(), body.close)

        return open_at, name


def source_for(uri: str) -> Source:
    scheme = urlparse(uri).scheme
    if scheme in ("https", "http"):
        return DirectUrl(uri)
    if scheme == "s3":
        return S3(uri)
    raise FetchError(f"No downloader for {uri!r}.")
