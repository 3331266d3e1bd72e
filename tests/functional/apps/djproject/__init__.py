"""A minimal real Django project served through django.core.wsgi.get_wsgi_application()."""
