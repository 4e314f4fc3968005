"""Deployments: create, update, hibernate, activate and delete through a runner, with events."""
