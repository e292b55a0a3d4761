"""A run outside any caller's transaction, as beat and the command run it: its own REPEATABLE
READ snapshot, so every check reads the same committed state.

Its own module, run after the others: a transactional test flushes the database afterwards,
which also drops the rows data migrations created (beat's schedule)."""

import pytest
from django.db import connection
from django.db.models import F

from audit import checks
from audit.models import AuditRun, Violation
from audit.services import audit_run
from inventory.models import StockLevel
from testing import scenarios

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_run_reads_one_repeatable_read_snapshot_and_commits_its_findings(monkeypatch):
    seen: list[str] = []

    def isolation(scope: checks.Scope) -> list[checks.Finding]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('transaction_isolation'), current_setting('jit')")
            seen.extend(cursor.fetchone())
        return []

    monkeypatch.setattr(checks, "CHECKS", [*checks.CHECKS, isolation])
    monkeypatch.setattr("audit.services.CHECKS", checks.CHECKS)
    product = scenarios.catalog()
    StockLevel.objects.filter(product=product).update(on_hand=F("on_hand") + 1)

    report = audit_run(full=True)
    again = audit_run()

    assert seen == ["repeatable read", "off", "repeatable read", "off"]
    assert not connection.in_atomic_block
    assert [f.kind for f in report.findings] == [f.kind for f in again.findings] == ["stock_mismatch"]
    assert Violation.objects.get().is_open and AuditRun.objects.count() == 2
