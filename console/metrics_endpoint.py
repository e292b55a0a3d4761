"""``/metrics``: Prometheus' text format, for scrapers only.

Counters and histograms come from common.metrics: this process' own, or, with
``PROMETHEUS_MULTIPROC_DIR`` set, the sum over every process writing there (gunicorn's
workers, Celery's prefork children). Levels the database knows are read at scrape time by
:class:`DatabaseCollector`, so they are exact whichever process changed them.

Access: a request from loopback or from a network in ``METRICS_ALLOWED_NETWORKS`` (CIDR list),
or one carrying ``Authorization: Bearer <METRICS_TOKEN>``; anything else is a 403. A request
that came through a proxy (``X-Forwarded-For``, ``Forwarded`` or ``X-Real-IP``) is not trusted
by address, because behind a proxy on the same host every visitor would look like loopback:
it needs the token.
"""

import functools
import hmac
import ipaddress
import logging
import os
from collections.abc import Iterator

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric

from analytics.selectors import consumer_lag
from audit.selectors import violation_counts
from outbox.selectors import dead_letter_count, outbox_backlog
from sagas.selectors import saga_stuck_counts

logger = logging.getLogger(__name__)

PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


class DatabaseCollector:
    """Gauges read from PostgreSQL at each scrape: the outbox backlog and its age, dead letters,
    stuck sagas by step, open violations by kind. Each read is served by a partial index."""

    def collect(self) -> Iterator[Metric]:

        up = GaugeMetricFamily("backoffice_database_scrape_up", "1 when the gauges below could be read.")
        try:
            backlog = outbox_backlog()
            dead = dead_letter_count()
            stuck = saga_stuck_counts()
            violations = violation_counts()
            lag = consumer_lag()
        except DatabaseError as exc:
            logger.warning("metrics: the database could not be read", extra={"error": str(exc)})
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily(
            "backoffice_outbox_backlog_messages", "Committed messages not yet published.", value=backlog.count
        )
        yield GaugeMetricFamily(
            "backoffice_outbox_oldest_age_seconds",
            "Age of the oldest unpublished message (0 when none).",
            value=backlog.oldest_age_seconds,
        )
        yield GaugeMetricFamily("backoffice_dead_letters", "Dead letters awaiting an operator.", value=dead)
        by_step = GaugeMetricFamily("backoffice_sagas_stuck_now", "Sagas flagged stuck now, by step.", labels=["step"])
        for step, count in sorted(stuck.items()):
            by_step.add_metric([step], count)
        yield by_step
        by_kind = GaugeMetricFamily(
            "backoffice_audit_violations_open", "Open consistency violations, by kind.", labels=["kind"]
        )
        for kind, count in sorted(violations.items()):
            by_kind.add_metric([kind], count)
        yield by_kind
        if lag is not None:
            yield GaugeMetricFamily(
                "backoffice_stream_consumer_lag_events",
                "Events on the stream the analytics consumer has not folded yet (as of its last look at the tail).",
                value=lag.events,
            )
            yield GaugeMetricFamily(
                "backoffice_stream_consumer_lag_seconds",
                "Age of the last event the analytics consumer folded, while it is behind (0 when caught up).",
                value=lag.seconds,
            )
            yield GaugeMetricFamily(
                "backoffice_stream_consumer_offset",
                "The analytics consumer's position on the stream.",
                value=lag.next_offset,
            )


class _ThisProcess:
    """The default registry's metrics (this process' counters, and its runtime)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def scrape_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    registry.register(DatabaseCollector())
    return registry


def metrics_allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if token and hmac.compare_digest(request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()):
        return True
    if any(name in request.headers for name in PROXY_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return address.is_loopback or any(address in network for network in _networks(*settings.METRICS_ALLOWED_NETWORKS))


@functools.cache
def _networks(*cidrs: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_LATEST)
