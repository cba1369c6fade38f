"""The packaged vLLM list is the seed's list, complete and in order; matching is case-insensitive."""

from __future__ import annotations

from pathlib import Path

import pytest

from modeldeploy.engines.vllm_models import is_vllm_supported, parse_model_list, seed_supported_models

SEED_NAME = "000_7bf0c0505e53c80d.txt"
SEED_COUNT = 119  # names in the English seed's list (32 bullet groups)


def seed_names(repo_root: Path) -> list[str]:
    """The names in the English seed's bullet lines under 'Currently, supported model includes:'."""
    seed = repo_root / ".." / "shared" / "seeds" / SEED_NAME
    if not seed.exists():
        pytest.skip(f"seed {SEED_NAME} is not beside the checkout")
    block = seed.read_text(encoding="utf-8").split("Currently, supported model includes:")[1].split("SGLang#")[0]
    names: list[str] = []
    for line in block.splitlines():
        line = line.strip()
        if line.startswith("•"):
            names.extend(n.strip() for n in line[1:].split(","))
    return names


def test_every_seed_name_is_in_the_file_in_seed_order(repo_root: Path) -> None:
    names = seed_names(repo_root)
    assert len(names) == SEED_COUNT
    assert list(seed_supported_models()) == names


def test_count_and_groups() -> None:
    assert len(seed_supported_models()) == SEED_COUNT
    assert len(set(n.lower() for n in seed_supported_models())) == SEED_COUNT
    text = (Path(__file__).resolve().parents[3] / "operator/modeldeploy/data/vllm_supported.txt").read_text()
    assert sum(1 for line in text.splitlines() if line.startswith("# group ")) == 32


def test_english_only_names_are_present() -> None:
    # The Chinese twin stops at glm-5; the English seed (the longer one) adds these.
    assert {"MiniMax-M2.7", "glm-5.1"} <= set(seed_supported_models())


@pytest.mark.parametrize(
    "name", ["qwen2.5-instruct", "QWEN2.5-INSTRUCT", "yi", "qwq-32b", "glm-4.6", "InternLM2ForCausalLM", " qwen3 "]
)
def test_case_insensitive_match(name: str) -> None:
    assert is_vllm_supported(name)


@pytest.mark.parametrize("name", ["qwen2.5", "llama-3.1-instruct"])
def test_known_names(name: str) -> None:
    assert is_vllm_supported(name)


@pytest.mark.parametrize("name", ["gemma-3-4b-it", "qwen2.5-vl-instruct", "my-model", ""])
def test_unknown_names(name: str) -> None:
    assert not is_vllm_supported(name)


def test_extra_families_extend_the_list() -> None:
    assert not is_vllm_supported("my-family")
    assert is_vllm_supported("My-Family", ["my-family"])
    assert is_vllm_supported("my-family", [" MY-FAMILY "])


def test_parse_model_list_ignores_comments_and_blanks() -> None:
    assert parse_model_list("# group\n\n a \n#b\nc\n") == ("a", "c")
