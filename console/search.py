"""One search box for whatever an operator is handed: an order id, a saga id, a customer's
email (a fragment, in any case), a payment or refund reference, a tracking number, an
idempotency key or a message id. Every kind of term is tried, each by an indexed lookup in
the context that owns it (through its selectors), and the sagas found are the answer.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from orders.selectors import saga_ids_of_customer_email
from outbox.selectors import correlation_ids_of_message
from payments.selectors import saga_ids_of_reference
from sagas.keys import parse_step_key
from sagas.models import SagaInstance
from sagas.selectors import saga_ids_of_idempotency_key
from shipping.selectors import saga_ids_of_tracking_number

# More matches than this and the operator is asked for a narrower term.
SEARCH_LIMIT = 200


@dataclass(frozen=True)
class SearchResult:
    term: str
    # Saga id -> what the term matched for it ("customer email", "tracking number", ...).
    matches: dict[uuid.UUID, list[str]]
    truncated: bool

    @property
    def saga_ids(self) -> list[uuid.UUID]:
        return list(self.matches)

    @property
    def single(self) -> uuid.UUID | None:
        return next(iter(self.matches)) if len(self.matches) == 1 else None


def saga_search(*, term: str, limit: int = SEARCH_LIMIT) -> SearchResult:
    term = term.strip()
    matches: dict[uuid.UUID, list[str]] = {}
    if not term:
        return SearchResult(term=term, matches=matches, truncated=False)

    def add(ids: list, what: str) -> None:
        for saga_id in ids:
            try:
                key = saga_id if isinstance(saga_id, uuid.UUID) else uuid.UUID(str(saga_id))
            except ValueError:
                continue
            matches.setdefault(key, [])
            if what not in matches[key]:
                matches[key].append(what)

    as_uuid = _uuid_or_none(term)
    if as_uuid is not None:
        add(list(SagaInstance.objects.filter(pk=as_uuid).values_list("pk", flat=True)), "saga id")
        add(correlation_ids_of_message(message_id=term), "message id")
    elif term.isdigit():
        # An order's saga: (aggregate, aggregate_id) is unique and indexed.
        ids = SagaInstance.objects.filter(aggregate="order", aggregate_id=term).values_list("pk", flat=True)
        add(list(ids), "order id")
    else:
        parts = parse_step_key(term)
        if parts is not None:
            add(list(SagaInstance.objects.filter(pk=parts.saga_id).values_list("pk", flat=True)), "step key")
        add(saga_ids_of_idempotency_key(key=term, limit=limit), "idempotency key")
        add(saga_ids_of_reference(reference=term, limit=limit), "payment or refund reference")
        add(saga_ids_of_tracking_number(tracking_number=term, limit=limit), "tracking number")
        add(saga_ids_of_customer_email(fragment=term, limit=limit + 1), "customer email")
    truncated = len(matches) > limit
    if truncated:
        matches = dict(list(matches.items())[:limit])
    return SearchResult(term=term, matches=matches, truncated=truncated)


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
