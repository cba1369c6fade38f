"""Autoscaling and one OpenAI endpoint: settings, the pure plan, the rendered objects, CRD discovery."""
