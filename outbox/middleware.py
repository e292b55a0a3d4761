"""Web requests leave the messages they commit to the relay (see outbox.dispatch)."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from outbox.dispatch import relay_sends


class RelaySendsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with relay_sends():
            return self.get_response(request)
