"""A Content-Security-Policy on every HTML page: the admin, the API docs, error pages.

Django 5.2 has none built in. The policy lets a page load scripts, styles, images and fonts
from this site only, and run no inline script but one carrying the request's nonce
(``request.csp_nonce``, for the dashboard's refresh): stored text that slipped past escaping
could not run. Inline ``style`` attributes stay allowed (the admin's and our templates use them;
a style cannot run code). Frames are refused, like X-Frame-Options DENY. The API docs use
drf-spectacular's split Swagger view, whose start-up script is a file of ours, not inline.
"""

import secrets
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

POLICY = (
    "default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.csp_nonce = secrets.token_urlsafe(16)
        response = self.get_response(request)
        if "Content-Security-Policy" not in response and response.get("Content-Type", "").startswith("text/html"):
            response["Content-Security-Policy"] = POLICY.format(nonce=request.csp_nonce)
        return response
