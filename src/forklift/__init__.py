"""forklift: a pure-Python pre-fork WSGI server for HTTP/1.1 and the uwsgi protocol."""

__version__ = "0.1.0"
__all__ = ["__version__"]
