"""Rendering: a ModelDeployment and a Decision in, the Deployment and Service out. Pure, deterministic."""
