"""Dead letters as the messaging layer keeps them: the class of the failure they are grouped
by, and their end when an operator discards one (kept, with who, when and why)."""

import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from outbox.consumer import deliver, register
from outbox.models import DeadLetter, OutboxMessage
from outbox.publishing import publish
from outbox.services import DiscardRefused, ReplayRefused, dead_letter_discard, dead_letter_replay
from testing.messages import sent_envelope

pytestmark = pytest.mark.django_db


def _published(type: str) -> OutboxMessage:
    with transaction.atomic():
        message = publish(type=type, destination="default", payload={}, aggregate="test", aggregate_id=1)
    OutboxMessage.objects.filter(pk=message.pk).update(published_at=timezone.now())
    return message


def _failing(message, _prepared):
    raise TimeoutError("the provider did not answer")


def test_a_dead_letter_keeps_the_class_of_the_error_it_died_of():
    register("default", "test_times_out", handle=_failing)
    timed_out = _published("test_times_out")
    unknown = _published("test_no_handler")

    assert deliver(sent_envelope(timed_out), attempt=settings.OUTBOX_MAX_ATTEMPTS - 1) == "dead_letter"
    assert deliver(sent_envelope(unknown)) == "dead_letter"

    classes = dict(DeadLetter.objects.values_list("type", "error_class"))
    assert classes == {"test_times_out": "TimeoutError", "test_no_handler": "PoisonMessage"}


def test_a_discarded_dead_letter_is_kept_with_who_when_and_why_and_is_not_replayed():
    register("default", "test_times_out", handle=_failing)
    message = _published("test_times_out")
    deliver(sent_envelope(message), attempt=settings.OUTBOX_MAX_ATTEMPTS - 1)
    dead = DeadLetter.objects.get()

    discarded = dead_letter_discard(dead_letter_id=dead.pk, by="olga", reason="the provider refunded by hand")

    assert (discarded.status, discarded.discarded_by, discarded.discard_reason) == (
        DeadLetter.Status.DISCARDED,
        "olga",
        "the provider refunded by hand",
    )
    assert DeadLetter.objects.filter(pk=dead.pk, envelope__message_id=str(message.message_id)).exists()
    with pytest.raises(ReplayRefused, match="discarded by olga"):
        dead_letter_replay(dead_letter=dead)
    with pytest.raises(DiscardRefused):
        dead_letter_discard(dead_letter_id=dead.pk, by="olga", reason="again")
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 0


def test_a_replayed_dead_letter_that_dies_again_waits_for_an_operator_afresh():
    register("default", "test_times_out", handle=_failing)
    message = _published("test_times_out")
    deliver(sent_envelope(message), attempt=settings.OUTBOX_MAX_ATTEMPTS - 1)
    dead = DeadLetter.objects.get()
    dead_letter_replay(dead_letter=dead)

    deliver(sent_envelope(message), attempt=settings.OUTBOX_MAX_ATTEMPTS - 1)  # fails again

    dead.refresh_from_db()
    assert (dead.status, dead.replay_count, dead.discarded_by) == (DeadLetter.Status.DEAD, 1, "")
