"""The shared model cache: one claim and one download Job per model (plan.py), its status (status.py).

The controller side (creating the objects, reading them) is controller/model_cache.py; the engine pods
mount the claim read-only (render). See docs/model-cache.md.
"""
