"""Helpers for tests and demos: tiny randomly initialised model checkpoints (``tiny_models``)."""
