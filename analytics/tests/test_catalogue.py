"""The catalogue of integration events: every event documented, its example valid, and the
generated page in docs/ the same as the code says."""

from pathlib import Path

from django.conf import settings

from analytics.management.commands.events_catalogue import catalogue_markdown
from outbox.events import catalogue
from outbox.messages import parse_payload


def test_every_event_has_a_valid_example_and_a_description():
    specs = catalogue()
    assert {(spec.type, spec.version) for spec in specs} == {
        ("order.placed", 1),
        ("order.confirmed", 1),
        ("order.cancelled", 1),
        ("payment.captured", 1),
        ("payment.refunded", 1),
        ("stock.reserved", 1),
        ("stock.released", 1),
        ("shipment.created", 1),
        ("shipment.cancelled", 1),
    }
    for spec in specs:
        assert spec.doc, spec.type
        event = parse_payload(spec.schema, spec.example)
        assert event.order_id and event.occurred_at.endswith("+00:00")


def test_the_page_in_docs_is_what_the_code_generates():
    page = Path(settings.BASE_DIR) / "docs" / "events.md"
    assert page.read_text() == catalogue_markdown(), "run: python manage.py events_catalogue --write"
