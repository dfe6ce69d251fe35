"""Cascade: a Postgres-native outreach pipeline. Shared internals of the CLI, listener and web app."""
