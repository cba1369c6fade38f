"""Dotted `engine.args` → xllamacpp CommonParams, coerced by the fields' real types."""

from __future__ import annotations

import pytest

from modeldeploy.engines.llamacpp.params import ParamError, all_names, apply_params, parse_assignments

xllamacpp = pytest.importorskip("xllamacpp")


@pytest.fixture
def params() -> object:
    return xllamacpp.CommonParams()


def test_scalars_and_nested_names_take_the_field_type(params: object) -> None:
    applied = apply_params(
        params,
        [
            ("n_ctx", "4096"),
            ("n_parallel", "4"),
            ("sampling.top_k", "20"),
            ("sampling.temp", "0.5"),
            ("ctx_shift", "true"),
            ("cpuparams.n_threads", "3"),
            ("chat_template", "chatml"),
        ],
    )
    assert params.n_ctx == 4096 and params.n_parallel == 4
    assert params.sampling.top_k == 20 and params.sampling.temp == pytest.approx(0.5)
    assert params.ctx_shift is True and params.cpuparams.n_threads == 3
    assert applied["sampling.top_k"] == 20 and applied["chat_template"] == "chatml"


@pytest.mark.parametrize("raw", ["q8_0", "Q8_0", "GGML_TYPE_Q8_0", "8"])
def test_enums_accept_short_full_and_numeric_spellings(params: object, raw: str) -> None:
    apply_params(params, [("cache_type_k", raw)])
    assert params.cache_type_k == xllamacpp.ggml_type.GGML_TYPE_Q8_0


@pytest.mark.parametrize(("raw", "member"), [("on", "ENABLED"), ("off", "DISABLED"), ("auto", "AUTO")])
def test_tristate_switches_take_on_off(params: object, raw: str, member: str) -> None:
    apply_params(params, [("flash_attn_type", raw)])
    assert params.flash_attn_type.name.endswith(member)


def test_lists_fixed_arrays_and_sets(params: object) -> None:
    applied = apply_params(
        params, [("tensor_split", "0.6,0.4"), ("antiprompt", '["User:", "###"]'), ("model_alias", "a,b")]
    )
    assert params.tensor_split[:3] == pytest.approx([0.6, 0.4, 0.0]) and len(params.tensor_split) == 128
    assert applied["tensor_split"] == pytest.approx([0.6, 0.4])
    assert params.antiprompt == ["User:", "###"]
    assert applied["model_alias"] == ["a", "b"]


def test_every_problem_is_named_in_one_sentence(params: object) -> None:
    with pytest.raises(ParamError) as err:
        apply_params(
            params,
            [
                ("sampling.top_kk", "1"),
                ("n_ctx", "abc"),
                ("ctx_shift", "maybe"),
                ("cache_type_k", "q9"),
                ("sampling", "1"),
                ("n_ctx.x", "1"),
            ],
        )
    text = str(err.value)
    assert text.count(".") >= 1 and "\n" not in text
    assert "unknown parameter sampling.top_kk (did you mean sampling.top_k?)" in text
    assert "n_ctx must be an integer, got 'abc'" in text
    assert "ctx_shift must be a boolean" in text
    assert "cache_type_k must be one of" in text and "q8_0" in text
    assert "sampling is a group of parameters" in text
    assert "n_ctx.x (n_ctx is not a group)" in text


@pytest.mark.parametrize("key", ["model.path", "mmproj.path", "port", "hostnames", "n_gpu_layers"])
def test_fields_the_operator_owns_are_refused(params: object, key: str) -> None:
    with pytest.raises(ParamError, match="cannot be set in engine.args"):
        apply_params(params, [(key, "1")])


def test_fixed_arrays_refuse_too_many_values(params: object) -> None:
    with pytest.raises(ParamError, match="tensor_split must be at most 128 values"):
        apply_params(params, [("tensor_split", ",".join(["1"] * 129))])


def test_object_lists_cannot_be_spelled_in_args(params: object) -> None:
    with pytest.raises(ParamError, match="lora_adapters cannot be set from engine.args"):
        apply_params(params, [("lora_adapters", "x")])


def test_assignments_need_an_equals_sign() -> None:
    assert parse_assignments(["a=1", "b.c=x=y"]) == [("a", "1"), ("b.c", "x=y")]
    with pytest.raises(ParamError, match="'n_ctx' must be written as name=value"):
        parse_assignments(["n_ctx"])


def test_the_seed_examples_are_known_names(params: object) -> None:
    names = set(all_names(params))
    assert {"n_ctx", "n_parallel", "sampling.top_k", "n_gpu_layers", "ctx_shift"} <= names
