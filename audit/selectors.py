"""Reads of the auditor's findings, for the operators' dashboard and the health check."""

from django.db.models import Count

from audit.models import Violation


def open_violations(*, limit: int = 50) -> list[Violation]:
    """Open violations, the longest-standing first: the one that has waited longest for an
    operator is at the top. Each reads well with ``str()``."""
    return list(Violation.objects.filter(resolved_at__isnull=True).order_by("first_seen", "id")[:limit])


def violation_counts() -> dict[str, int]:
    """Open violations by kind (served by the partial index on open violations)."""
    rows = Violation.objects.filter(resolved_at__isnull=True).values("kind").annotate(n=Count("id")).order_by("kind")
    return {row["kind"]: row["n"] for row in rows}


def violation_get(*, violation_id: int) -> Violation | None:
    return Violation.objects.filter(pk=violation_id).first()
