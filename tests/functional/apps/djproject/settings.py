"""Minimal settings: no database, CSRF on, templates from ./templates."""

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "functional-tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "djproject.urls"
INSTALLED_APPS: list = []
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "OPTIONS": {"context_processors": ["django.template.context_processors.csrf"]},
    }
]
DATABASES: dict = {}
USE_TZ = True
