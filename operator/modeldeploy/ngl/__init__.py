"""Auto-NGL: how many llama.cpp layers fit on the GPUs (see docs/ngl.md in shared spec and docs/auto-ngl-validation.md).

Modules: gguf_header (bounded header reader), architectures (per-architecture facts), estimate (the
pure estimate), gpus (NVML), cli (`modeldeploy ngl`), initcontainer (the init container's main).

Nothing is imported here: the llama.cpp entrypoint's preflight reads headers with gguf_header in an
image without the operator's dependencies (pydantic, which cli needs), so importing this package must
not pull the rest in. Import the modules themselves.
"""
