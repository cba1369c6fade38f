"""Where weights live in the pod is derived from model.uri alone, safely."""

from __future__ import annotations

import pytest

from modeldeploy.model_paths import ModelUriError, locate


@pytest.mark.parametrize(
    ("uri", "scheme", "fetch", "directory"),
    [
        ("hf://Qwen/Qwen2.5-7B-Instruct", "hf", True, "/models/hf/Qwen/Qwen2.5-7B-Instruct/main"),
        ("hf://Qwen/Qwen2.5-7B-Instruct@v1.0", "hf", True, "/models/hf/Qwen/Qwen2.5-7B-Instruct/v1.0"),
        ("modelscope://qwen/Qwen2-7B", "modelscope", True, "/models/modelscope/qwen/Qwen2-7B/main"),
        ("s3://bucket/a/b", "s3", True, "/models/s3/bucket/a/b"),
        ("https://host.example/x/m.gguf", "https", True, "/models/url/host.example/m.gguf"),
        ("pvc://weights/llama/8b", "pvc", False, "/mnt/pvc/weights/llama/8b"),
        ("/data/models/x", "local", False, "/data/models/x"),
    ],
)
def test_locate(uri: str, scheme: str, fetch: bool, directory: str) -> None:
    loc = locate(uri)
    assert (loc.scheme, loc.needs_fetch, loc.directory) == (scheme, fetch, directory)


def test_model_path_joins_file_except_for_urls() -> None:
    assert locate("hf://a/b").model_path("m.gguf") == "/models/hf/a/b/main/m.gguf"
    assert locate("https://h/m.gguf").model_path("ignored.gguf") == "/models/url/h/m.gguf"


@pytest.mark.parametrize("uri", ["hf://onlyorg", "ftp://x/y", "pvc:///path", "/a/../../etc", "s3:///k"])
def test_bad_uris(uri: str) -> None:
    with pytest.raises(ModelUriError, match="model.uri"):
        locate(uri)


def test_traversal_is_neutralised_in_repo_names() -> None:
    assert ".." not in locate("hf://../..@..").directory.split("/")


PRESIGNED = (
    "https://bucket.s3.amazonaws.com/m/tiny.gguf?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=deadbeef"
)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (PRESIGNED, "https://bucket.s3.amazonaws.com/m/tiny.gguf?<redacted>"),
        ("https://user:pw@host/m.gguf", "https://<redacted>@host/m.gguf"),
        ("https://host/m.gguf", "https://host/m.gguf"),
        ("hf://org/repo@main", "hf://org/repo@main"),
        ("/mnt/models/x", "/mnt/models/x"),
    ],
)
def test_presigned_uris_are_redacted(uri: str, shown: str) -> None:
    """A presigned URL's signature is a credential: status and annotations show the URI without it."""
    from modeldeploy.model_paths import redact_text, redact_uri

    assert redact_uri(uri) == shown
    assert redact_text(f"HTTP 403 for {uri} (Forbidden)") == f"HTTP 403 for {shown} (Forbidden)"


def test_bad_uri_errors_do_not_repeat_the_signature() -> None:
    with pytest.raises(ModelUriError) as info:
        locate("https://host/?sig=secret")
    assert "secret" not in str(info.value)
