"""The byte ranges and pieces every local file server sends (hub, Xet CAS, ModelScope)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldeploy_dev.httpfiles import STREAM_CHUNK, chunks, parse_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-", (0, 100)),
        ("bytes=10-19", (10, 20)),
        ("bytes=90-500", (90, 100)),  # past the end: up to the end, as RFC 9110 says
        ("bytes=-30", (70, 100)),
        ("bytes=-500", (0, 100)),
        ("bytes=5-9, 20-29", (5, 10)),  # the first range only
        ("bytes=100-", None),  # starts at the end: 416
        ("bytes=20-10", None),
        ("bytes=x-", None),
    ],
)
def test_ranges_are_read_as_http_says(header: str, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("in_memory", [True, False])
def test_chunks_give_exactly_the_range_in_throttle_sized_pieces(tmp_path: Path, in_memory: bool) -> None:
    data = bytes(range(256)) * (3 * STREAM_CHUNK // 256 + 7)
    path = tmp_path / "blob"
    path.write_bytes(data)
    source = data if in_memory else path
    start, end = 1000, len(data) - 5
    pieces = list(chunks(source, start, end))
    assert b"".join(pieces) == data[start:end]
    assert max(len(p) for p in pieces) == STREAM_CHUNK and len(pieces) == 4
