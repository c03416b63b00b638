"""Shared core: configuration, artifacts, hashing, logging."""
