"""The seed's llama.cpp Common Issues that the spec alone reveals become Decision warnings."""

from __future__ import annotations

import pytest
from selection_factories import CONFIG, spec

from modeldeploy.engines.llamacpp.checks import (
    FIX_CONTEXT_MULTIMODAL,
    FIX_CONTEXT_TEXT,
    MIN_SLOT_CTX_MULTIMODAL,
    MIN_SLOT_CTX_TEXT,
    llamacpp_warnings,
)
from modeldeploy.selection.engine import model_view

GGUF = {"fmt": "ggufv2", "quantization": "Q4_K_M"}
PROJECTOR = {"abilities": ["chat", "vision"], "multimodalProjector": "mmproj-f16.gguf"}


def warnings_for(args: dict, **model: object) -> tuple[str, ...]:
    return llamacpp_warnings(model_view(spec(engine={"args": args}, model=model, **GGUF), CONFIG))


@pytest.mark.parametrize(
    "args",
    [
        {},  # n_ctx from the model: unknown here
        {"n_ctx": 0},
        {"n_ctx": 4096, "n_parallel": 4},  # 1024 per slot: the threshold itself is fine
        {"n_ctx": 2048},
        {"n_parallel": 64},  # n_ctx unknown
        {"n_ctx": 8192, "n_parallel": -1},  # -1: llama.cpp decides; counted as 1
    ],
)
def test_text_model_without_warnings(args: dict) -> None:
    assert warnings_for(args) == ()


@pytest.mark.parametrize(
    ("args", "figures"),
    [
        ({"n_ctx": 4096, "n_parallel": 8}, "512 tokens of context per slot (n_ctx 4096 / n_parallel 8)"),
        ({"n_ctx": "2048", "n_parallel": "4"}, "512 tokens of context per slot (n_ctx 2048 / n_parallel 4)"),
        ({"n-ctx": 512}, "512 tokens of context per slot (n_ctx 512 / n_parallel 1)"),
    ],
)
def test_small_slot_context_warns_with_the_seed_fix(args: dict, figures: str) -> None:
    (warning,) = warnings_for(args)
    assert figures in warning
    assert warning.endswith(FIX_CONTEXT_TEXT)
    assert "the request exceeds the available context size" in warning


@pytest.mark.parametrize(
    ("args", "model", "warns"),
    [
        ({"n_ctx": 8192, "n_parallel": 4}, PROJECTOR, True),  # 2048 per slot, ctx_shift off
        ({"n_ctx": 16384, "n_parallel": 4}, PROJECTOR, False),
        ({"n_ctx": 8192, "n_parallel": 4, "ctx_shift": True}, PROJECTOR, False),
        ({"n_ctx": 8192, "n_parallel": 4, "ctx_shift": "true"}, PROJECTOR, False),
        ({"n_ctx": 8192, "n_parallel": 4, "ctx_shift": False}, PROJECTOR, True),
        ({"n_ctx": 8192, "n_parallel": 4}, {"multimodalProjector": "mmproj.gguf"}, True),  # projector alone
        ({}, PROJECTOR, False),  # n_ctx from the model
    ],
)
def test_multimodal_without_ctx_shift(args: dict, model: dict, warns: bool) -> None:
    warnings = warnings_for(args, **model)
    assert any(w.endswith(FIX_CONTEXT_MULTIMODAL) for w in warnings) is warns


def test_vision_without_projector_warns_about_embedded_projectors() -> None:
    warnings = warnings_for({}, abilities=["vision"])
    assert warnings == (
        "model.abilities includes vision but model.multimodalProjector is not set: llama.cpp needs the projector "
        "as a separate mmproj file; a projector embedded in the model GGUF is not supported",
    )


def test_unreadable_numbers_are_reported() -> None:
    assert warnings_for({"n_ctx": "lots"}) == ("engine.args.n_ctx is 'lots', not an integer; llama.cpp will refuse it",)
    assert warnings_for({"n_parallel": True}) == (
        "engine.args.n_parallel is True, not an integer; llama.cpp will refuse it",
    )


def test_thresholds_match_the_pod_preflight() -> None:
    preflight = pytest.importorskip("modeldeploy.engines.llamacpp.preflight")
    assert (MIN_SLOT_CTX_TEXT, MIN_SLOT_CTX_MULTIMODAL) == (
        preflight.MIN_SLOT_CTX_TEXT,
        preflight.MIN_SLOT_CTX_MULTIMODAL,
    )
    assert (FIX_CONTEXT_TEXT, FIX_CONTEXT_MULTIMODAL) == (preflight.FIX_CONTEXT_TEXT, preflight.FIX_CONTEXT)
