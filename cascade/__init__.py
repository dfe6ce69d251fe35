"""Cascade: a Postgres-native outreach pipeline.

Shared internals of the CLI, the listener and the web app."""
