"""Durable background jobs: rows in the ``jobs`` table, run by an in-process worker or SAQ."""
