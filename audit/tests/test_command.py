"""``manage.py audit_consistency``: exit code 0 when clean, 1 when not; ``--json`` for machines."""

import io
import json

import pytest
from django.core.management import call_command
from django.db.models import F

from inventory.models import StockLevel
from testing import scenarios

pytestmark = pytest.mark.django_db


def _run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("audit_consistency", *args, stdout=out)
    except SystemExit as exit:
        return int(exit.code), out.getvalue()
    return 0, out.getvalue()


def test_a_clean_system_exits_0_and_says_clean():
    scenarios.catalog()
    scenarios.confirmed()

    code, out = _run("--full")

    assert code == 0
    assert out.startswith("full sweep: 1 order(s) checked")
    assert out.rstrip().endswith("clean")


def test_a_violation_exits_1_and_names_it():
    product = scenarios.catalog()
    StockLevel.objects.filter(product=product).update(on_hand=F("on_hand") + 1)

    code, out = _run("--full")

    assert code == 1
    assert "stock_mismatch: 1" in out
    assert f"stock_mismatch product:{product.pk}: SKU-A: on hand 11 (receipts 10)" in out


def test_json_output_lists_counts_and_violations_for_machines():
    product = scenarios.catalog()
    order = scenarios.confirmed()
    StockLevel.objects.filter(product=product).update(on_hand=F("on_hand") + 1)

    code, out = _run("--full", "--json")
    report = json.loads(out)

    assert code == 1
    assert report["clean"] is False and report["full"] is True
    assert report["checked_orders"] == 1
    assert report["counts"] == {"stock_mismatch": 1}
    assert report["violations"] == [
        {
            "kind": "stock_mismatch",
            "key": f"product:{product.pk}",
            "objects": {"product": product.pk, "sku": "SKU-A"},
            "detail": "SKU-A: on hand 11 (receipts 10), reserved 1 (movements 1, live reservations 1)",
        }
    ]
    assert order.pk  # the order itself is consistent


def test_json_output_of_a_clean_run_exits_0():
    code, out = _run("--json")

    assert code == 0
    assert json.loads(out)["clean"] is True
    assert json.loads(out)["violations"] == []
