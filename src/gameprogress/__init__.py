"""gameprogress: per-device game progress (highest level, last commit) over HTTP.

What users import: `create_app` (the Flask app factory) and `open_store` (a store from a
database URL). `gameprogress.wsgi:app` is the app for a WSGI server; `gameprogress` on the
command line migrates, exports and imports.
"""

__version__ = "0.1.0"
__all__ = ["__version__", "create_app", "open_store"]


def __getattr__(name: str):
    # Lazy, so that `import gameprogress` (e.g. by the CLI's --help) does not pull in Flask
    # and psycopg before they are needed.
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "open_store":
        from .store import open_store

        return open_store
    raise AttributeError(f"module 'gameprogress' has no attribute {name!r}")
