"""The REST API: models, optimizations, deployments and analytics, on Litestar."""
