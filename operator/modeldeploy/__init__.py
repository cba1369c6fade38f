"""ModelDeploy: a Kubernetes operator that deploys LLMs, choosing the engine the way Xinference does."""

__version__ = "0.1.0"
