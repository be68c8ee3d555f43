"""Deployment tools: credentials, deployed jobs, the loopback deployment, compose preparation."""
