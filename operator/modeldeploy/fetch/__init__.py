"""The model-fetch init container (`python -m modeldeploy.fetch`).

It puts `model.uri`'s files where `modeldeploy.model_paths.locate(uri)` says the engine will look,
resumably and verified, and does nothing on a restart that finds them already there.
"""

from modeldeploy.fetch.http import FetchError, download
from modeldeploy.fetch.sources import RemoteFile, source_for

__all__ = ["FetchError", "RemoteFile", "download", "source_for"]
