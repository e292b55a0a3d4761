"""What operators see: open violations on the dashboard and counted in /healthz, read-only
in the admin."""

import pytest
from django.contrib.auth import get_user_model
from django.db.models import F

from audit.models import Violation
from audit.selectors import open_violations, violation_counts
from audit.services import audit_run
from console import health
from inventory.models import StockLevel
from shipping.models import Shipment
from testing import scenarios

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_violations():
    product = scenarios.catalog()
    order = scenarios.confirmed()
    Shipment.objects.create(order_id=order.pk, idempotency_key="planted", status="created")
    StockLevel.objects.filter(product=product).update(on_hand=F("on_hand") + 1)
    audit_run(full=True)
    return product, order


def test_open_violations_and_their_counts_by_kind(two_violations):
    product, order = two_violations

    assert violation_counts() == {"confirmed_shipment_not_one": 1, "stock_mismatch": 1}
    shown = [str(violation) for violation in open_violations()]
    assert any(line.startswith(f"stock_mismatch product:{product.pk}: SKU-A: on hand 11") for line in shown)
    assert any(line.startswith(f"confirmed_shipment_not_one order:{order.pk}: 2 live shipment(s)") for line in shown)


def test_resolved_violations_are_neither_shown_nor_counted(two_violations):
    product, _ = two_violations
    StockLevel.objects.filter(product=product).update(on_hand=F("on_hand") - 1)
    audit_run(full=True)

    assert violation_counts() == {"confirmed_shipment_not_one": 1}
    assert [v.kind for v in open_violations()] == ["confirmed_shipment_not_one"]
    assert Violation.objects.count() == 2


def test_healthz_counts_open_violations_without_failing_because_of_them(two_violations, admin_client, monkeypatch):
    monkeypatch.setattr(health, "CHECKS", {"database": health._check_database})

    response = admin_client.get("/healthz")

    assert response.status_code == 200
    assert response.json()["violations"] == {
        "open": 2,
        "by_kind": {"confirmed_shipment_not_one": 1, "stock_mismatch": 1},
    }


def test_healthz_answers_even_when_the_violations_cannot_be_read(admin_client, monkeypatch):
    def broken() -> dict:
        raise RuntimeError("planted")

    monkeypatch.setattr(health, "CHECKS", {"database": health._check_database})
    monkeypatch.setattr(health, "violation_counts", broken)

    response = admin_client.get("/healthz")

    assert response.status_code == 200
    assert response.json()["violations"] == {"error": "RuntimeError: planted"}


def test_the_admin_lists_violations_with_filters_and_allows_no_change(two_violations, client):
    admin = get_user_model().objects.create_superuser("ops", "ops@example.com", "secret-password")
    client.force_login(admin)
    violation = Violation.objects.get(kind="stock_mismatch")

    listing = client.get("/admin/audit/violation/?resolved=no&kind__exact=stock_mismatch")
    page = client.get(f"/admin/audit/violation/{violation.pk}/change/")
    change = client.post(f"/admin/audit/violation/{violation.pk}/change/", {"detail": "edited"})

    assert listing.status_code == 200
    assert list(listing.context["cl"].result_list) == [violation]
    assert page.status_code == 200 and b"Save" not in page.content
    assert change.status_code == 403
    assert client.get("/admin/audit/violation/add/").status_code == 403
