"""A bearer token never travels over plain http:// (but to loopback), and the rule for each scheme.

See docs/security.md "Credentials"."""

from __future__ import annotations

import json

import pytest
from fetchcli import run as _run
from fileserver import Behaviour, Server

from modeldeploy.fetch.credentials import plaintext_refusal


@pytest.mark.parametrize(
    ("uri", "env", "refused"),
    [
        ("http://mirror.example.com/m.gguf", {"HTTP_BEARER_TOKEN": "t"}, "HTTP_BEARER_TOKEN"),
        ("https://mirror.example.com/m.gguf", {"HTTP_BEARER_TOKEN": "t"}, None),
        ("http://mirror.example.com/m.gguf", {}, None),  # nothing secret to send
        ("http://127.0.0.1:8080/m.gguf", {"HTTP_BEARER_TOKEN": "t"}, None),  # loopback
        ("http://[::1]:8080/m.gguf", {"HTTP_BEARER_TOKEN": "t"}, None),
        ("http://localhost/m.gguf", {"HTTP_BEARER_TOKEN": "t"}, None),
        ("hf://org/repo", {"HF_TOKEN": "t", "HF_ENDPOINT": "http://hub.internal"}, "HF_TOKEN"),
        ("hf://org/repo", {"HUGGING_FACE_HUB_TOKEN": "t", "HF_ENDPOINT": "http://10.0.0.7"}, "HUGGING_FACE_HUB_TOKEN"),
        ("hf://org/repo", {"HF_TOKEN": "t", "HF_ENDPOINT": "https://hub.internal"}, None),
        ("hf://org/repo", {"HF_TOKEN": "t"}, None),  # the Hub itself, https
        ("modelscope://org/repo", {"MODELSCOPE_API_TOKEN": "t", "MODELSCOPE_ENDPOINT": "http://ms"}, "MODELSCOPE"),
        ("modelscope://org/repo", {"MODELSCOPE_API_TOKEN": "t"}, None),
        ("s3://bucket/p", {"AWS_SECRET_ACCESS_KEY": "k", "AWS_ENDPOINT_URL": "http://minio"}, None),  # signed
    ],
)
def test_which_credentials_may_go_where(uri: str, env: dict[str, str], refused: str | None) -> None:
    why = plaintext_refusal(uri, env)
    if refused is None:
        assert why is None
    else:
        assert why is not None and why.startswith(f"Refusing to send {refused}") and "over plain http://" in why


def test_the_fetcher_sends_no_request_with_a_token_over_plain_http(tmp_path, capsys, monkeypatch) -> None:
    """The refusal comes before any request (a request to this name would fail on DNS, with another
    message), in the fetcher's one-sentence form, and names the host, never the token."""
    monkeypatch.setenv("HTTP_BEARER_TOKEN", "bearer-secret-1")
    uri = "http://weights.example.invalid/files/f.bin"
    code, records, err = _run(capsys, "--uri", uri, "--dest", str(tmp_path / "f"), "--attempts", "1")
    assert code == 1 and "Refusing to send HTTP_BEARER_TOKEN" in err and "http://weights.example.invalid" in err
    assert not (tmp_path / "f").exists()
    assert "bearer-secret-1" not in err + json.dumps(records)
    termination = (tmp_path / "termination-log").read_text()
    assert termination.startswith("Refusing to send HTTP_BEARER_TOKEN")


def test_a_token_to_a_loopback_http_server_is_still_sent(tmp_path, capsys, monkeypatch) -> None:
    b = Behaviour(files={"f.bin": b"abc"}, token="bearer-1")
    monkeypatch.setenv("HTTP_BEARER_TOKEN", "bearer-1")
    with Server(b) as srv:
        assert srv.url.startswith("http://127.0.0.1")
        code, _, _ = _run(capsys, "--uri", f"{srv.url}/files/f.bin", "--dest", str(tmp_path / "f"))
    assert code == 0 and (tmp_path / "f").read_bytes() == b"abc"
