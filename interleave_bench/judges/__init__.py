"""Judges: an OpenAI-compatible async client, a SQLite judgment cache, and an in-process backend."""
