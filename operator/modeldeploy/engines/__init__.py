"""Engines: one module per engine (its facts, model rules, node needs and container).

`engines/base.py` is the protocol, `engines/registry.py` the one table of engines; `engines/vllm.py`,
`sglang.py`, `transformers.py`, `mlx.py` and `llamacpp/spec.py` are the built-in engines (the
`llamacpp/` package is also the llama.cpp container's entrypoint, so this module imports nothing). The
model formats live in `modeldeploy/formats.py`, below both the engines and the API.
"""
