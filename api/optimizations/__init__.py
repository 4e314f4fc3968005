"""Optimizations: ``POST /models/{id}/optimize`` starts a durable job running the optimizer."""
