"""A real Flask app and a real Django project served through forklift."""

from __future__ import annotations

import hashlib
import re

import pytest

requests = pytest.importorskip("requests")


@pytest.fixture
def flask_site(servers, threads):
    pytest.importorskip("flask")
    return servers.get("flask_site:app", "--threads", str(threads))


@pytest.fixture
def django_site(servers, threads):
    pytest.importorskip("django")
    return servers.get("djproject.wsgi:application", "--threads", str(threads))


class TestFlask:
    def test_pages(self, flask_site):
        with requests.Session() as s:
            r = s.get(f"{flask_site.url}/", timeout=5)
            assert r.status_code == 200
            assert "Hello from Flask" in r.text
            assert r.headers["Content-Type"].startswith("text/html")
            r = s.get(f"{flask_site.url}/json?a=1&b=%C3%A9", timeout=5)
            assert r.json() == {"args": {"a": "1", "b": "é"}, "path": "/json", "root": ""}
            r = s.get(f"{flask_site.url}/missing-on-purpose", timeout=5)
            assert r.status_code == 404
            r = s.get(f"{flask_site.url}/no/such/route", timeout=5)
            assert r.status_code == 404

    def test_form_post(self, flask_site):
        r = requests.post(f"{flask_site.url}/form", data={"name": "Zoë", "level": "7"}, timeout=5)
        assert r.status_code == 200
        assert "Thanks, Zoë (7)" in r.text

    def test_chunked_upload(self, flask_site):
        payload = [b"part-%d-" % i * 1000 for i in range(50)]
        r = requests.post(f"{flask_site.url}/upload", data=iter(payload), timeout=10)
        body = b"".join(payload)
        assert r.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}

    def test_mounted_under_a_prefix(self, servers):
        pytest.importorskip("flask")
        server = servers.get("flask_site:app", "--threads", "2", "--mount", "/game")
        r = requests.get(f"{server.url}/game/json", timeout=5)
        assert r.json()["root"] == "/game" and r.json()["path"] == "/json"


class TestDjango:
    def test_plain_view(self, django_site):
        r = requests.get(f"{django_site.url}/", timeout=5)
        assert r.status_code == 200
        assert r.text == "hello from django"

    def test_template_form_with_csrf(self, django_site):
        with requests.Session() as s:
            page = s.get(f"{django_site.url}/form/", timeout=5)
            assert page.status_code == 200
            assert "<title>django form</title>" in page.text
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
            assert token, page.text
            assert "csrftoken" in s.cookies
            r = s.post(
                f"{django_site.url}/form/",
                data={"csrfmiddlewaretoken": token.group(1), "name": "Ada & Bob"},
                timeout=5,
            )
            assert r.status_code == 200
            assert "Hello, Ada &amp; Bob!" in r.text

    def test_post_without_csrf_is_refused(self, django_site):
        r = requests.post(f"{django_site.url}/form/", data={"name": "x"}, timeout=5)
        assert r.status_code == 403

    def test_csrf_exempt_api_and_query(self, django_site):
        body = b"q" * 100_000
        r = requests.post(f"{django_site.url}/api/?x=%C3%A9", data=body, timeout=5)
        assert r.json() == {
            "method": "POST",
            "path": "/api/",
            "body_length": len(body),
            "query": {"x": "é"},
        }

    def test_not_found_and_append_slash(self, django_site):
        assert requests.get(f"{django_site.url}/nope/", timeout=5).status_code == 404
        r = requests.get(f"{django_site.url}/form", timeout=5, allow_redirects=False)
        assert r.status_code == 301 and r.headers["Location"].endswith("/form/")
