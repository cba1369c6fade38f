"""The llama.cpp engine container's entrypoint (`python -m modeldeploy.engines.llamacpp`).

It turns the operator's argv (model path, `--param key=value` from `engine.args`, the auto-NGL result)
into xllamacpp `CommonParams`, checks the seed's common failure causes, logs the final parameters, and
serves llama.cpp's OpenAI-compatible API on port 8000.
"""
