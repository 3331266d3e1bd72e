"""Functional tests: a real forklift on a loopback port, spoken to in raw bytes."""
