"""Offline demo material: the tiny model builder (and, later, the known-answer task generator)."""
