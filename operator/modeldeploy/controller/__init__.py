"""The Kopf operator: handlers (Kopf glue), reconcile (I/O), status (pure), apply (SSA), nodes index.

Importing `modeldeploy.controller.handlers` registers the handlers with Kopf; `run.main` does that.
"""
