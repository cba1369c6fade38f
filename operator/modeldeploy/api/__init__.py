"""API types of modeldeploy.io (pydantic models) and the CRD generated from them."""
