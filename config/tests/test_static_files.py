"""The web as deployed serves its own static files: gunicorn with the production settings,
after ``collectstatic``, answers the admin's stylesheets and the API docs' Swagger UI scripts,
under hashed names cached for a year or more, as the pages themselves link them.

The console has no static folder of its own (its styles are inline in templates/admin/sagas/),
so the admin's files and drf-spectacular-sidecar's are all the static files there are.
"""

import http.client
import re
from dataclasses import dataclass

import pytest

from devtools.processes import WebProcess

ONE_YEAR = 365 * 24 * 3600
# ManifestStaticFilesStorage puts the first 12 hex digits of the content's MD5 before the suffix.
HASHED = re.compile(r"\.[0-9a-f]{12}\.[a-z0-9]+$")


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


def get(web: WebProcess, path: str, headers: dict[str, str] | None = None) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
    try:
        # Sent by the TLS-terminating proxy in front of gunicorn (SECURE_PROXY_SSL_HEADER).
        conn.request("GET", path, headers={"X-Forwarded-Proto": "https", **(headers or {})})
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


def linked_static(html: str) -> list[str]:
    """The static files a page loads: its stylesheets, scripts and icons."""
    return re.findall(r'<(?:link|script)\b[^>]*?(?:href|src)="(/static/[^"]+)"', html)


def max_age(cache_control: str) -> int:
    match = re.search(r"max-age=(\d+)", cache_control)
    return int(match.group(1)) if match else 0


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("/admin/login/", ["/static/admin/css/base.", "/static/admin/css/login.", "/static/admin/js/"]),
        (
            "/api/docs/",
            [
                "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.",
                "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-standalone-preset.",
                "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.",
            ],
        ),
    ],
)
def test_every_static_file_a_page_links_is_served_under_a_hashed_name_cached_for_a_year(production_web, page, expected):
    response = get(production_web, page)
    assert response.status == 200, production_web.tail()
    linked = linked_static(response.body.decode())
    for prefix in expected:
        assert any(path.startswith(prefix) for path in linked), (prefix, linked)

    for path in linked:
        assert HASHED.search(path), f"{page} links {path} under a name without its content's hash"
        asset = get(production_web, path)
        assert asset.status == 200, (path, asset.status)
        assert asset.body, path
        cache_control = asset.header("Cache-Control")
        assert max_age(cache_control) >= ONE_YEAR and "immutable" in cache_control, (path, cache_control)
        if path.endswith(".js"):
            assert asset.header("Content-Type").startswith("text/javascript"), path
        if path.endswith(".css"):
            assert asset.header("Content-Type").startswith("text/css"), path


def test_the_admin_stylesheet_is_served_compressed_and_under_its_plain_name(production_web):
    # The plain name (the 404) still answers, for a link an older page or a bookmark
    # holds, but with a short cache: its content changes with each release.
    plain = get(production_web, "/static/admin/css/base.css")
    assert plain.status == 200 and b"--header-bg" in plain.body, plain.status
    assert max_age(plain.header("Cache-Control")) < ONE_YEAR

    login = get(production_web, "/admin/login/").body.decode()
    (hashed,) = [path for path in linked_static(login) if path.startswith("/static/admin/css/base.")]
    compressed = get(production_web, hashed, {"Accept-Encoding": "gzip"})
    assert compressed.status == 200 and compressed.header("Content-Encoding") == "gzip"
    assert len(compressed.body) < len(plain.body)
