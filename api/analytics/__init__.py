"""Analytics: cost, performance, forecasts and suggestions computed from recorded usage.

The engine (``records``, ``cost``, ``performance``, ``forecast``, ``suggestions``) is pure
functions over usage samples and the price catalog; storage, ingestion and the HTTP endpoints
build on it.
"""
