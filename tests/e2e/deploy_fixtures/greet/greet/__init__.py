"""The dependency v3 adds: installed into the release's venv from a wheel in the repository."""

WORD = "greetings"
