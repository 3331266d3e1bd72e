"""The WSGI entry point: `gameprogress.wsgi:app` for forklift, gunicorn or uWSGI.

The database comes from `GAMEPROGRESS_DATABASE_URL` (default `sqlite:///./var/gameprogress.db`);
see docs/gameprogress.md for the other settings.
"""

from .app import create_app

app = create_app()
