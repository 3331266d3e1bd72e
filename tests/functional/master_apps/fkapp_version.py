"""Rewritten by the reload tests before a HUP: the workers of the new generation import it."""

VERSION = "v1"
