"""The sweeper's timing at its boundaries: when an unanswered command is sent again, and when
a step is given up to an operator instead. The clock is moved by dating the saga's last send
and deadline, as the sweeper reads them; every command counts as lost by the broker (handed
over, never answered), so only the timing decides."""

from datetime import timedelta

import pytest
from django.utils import timezone

from outbox.models import OutboxMessage
from sagas.models import SagaInstance, SagaState
from sagas.orchestrator import saga_sweep
from testing.saga_states import make_catalog, place

pytestmark = pytest.mark.django_db

RESEND_AFTER = 5  # seconds an attempt 1 may go unanswered
DEADLINE = 300


@pytest.fixture(autouse=True)
def timing(settings):
    settings.SAGA_RESEND_AFTER_SECONDS = RESEND_AFTER
    settings.SAGA_STEP_DEADLINE_SECONDS = DEADLINE


@pytest.fixture
def catalog():
    return make_catalog()


def _lost_by_the_broker() -> None:
    OutboxMessage.objects.filter(published_at__isnull=True).update(published_at=timezone.now())


def _date(saga: SagaInstance, *, sent_ago: float, deadline_in: float | None = None) -> None:
    now = timezone.now()
    fields = {"last_sent_at": now - timedelta(seconds=sent_ago)}
    if deadline_in is not None:
        fields["step_deadline"] = now + timedelta(seconds=deadline_in)
    SagaInstance.objects.filter(pk=saga.pk).update(**fields)


def _charge_commands(saga: SagaInstance) -> list[OutboxMessage]:
    return list(OutboxMessage.objects.filter(correlation_id=str(saga.pk), type="charge_payment").order_by("id"))


def _at_attempt(attempt: int) -> SagaInstance:
    """A saga whose charge command was lost attempt after attempt, each resent by the sweeper."""
    saga = place()
    for _ in range(attempt - 1):
        _lost_by_the_broker()
        _date(saga, sent_ago=3600)
        assert saga_sweep()["resent"] == 1
    _lost_by_the_broker()
    saga.refresh_from_db()
    assert (saga.state, saga.current_step, saga.attempt, saga.stuck) == (
        SagaState.RUNNING,
        "charge_payment",
        attempt,
        False,
    )
    return saga


def test_a_resend_due_a_few_seconds_before_the_deadline_is_sent_not_flagged_stuck(catalog):
    saga = _at_attempt(1)
    _date(saga, sent_ago=RESEND_AFTER + 1, deadline_in=3)

    assert saga_sweep() == {"resent": 1, "stuck": 0, "failed": 0}

    saga.refresh_from_db()
    assert (saga.attempt, saga.stuck, saga.stuck_reason) == (2, False, "")
    first, resent = _charge_commands(saga)
    assert resent.published_at is None  # on its way to the payments worker
    assert resent.headers["idempotency_key"] == first.headers["idempotency_key"]  # no second charge possible

    # A second past the deadline the unanswered step is an operator's: flagged, not resent,
    # though attempt 2's resend (after twice RESEND_AFTER) is due as well.
    _lost_by_the_broker()
    _date(saga, sent_ago=RESEND_AFTER * 2 + 1, deadline_in=-1)
    assert saga_sweep() == {"resent": 0, "stuck": 1, "failed": 0}
    saga.refresh_from_db()
    assert saga.stuck and "deadline" in saga.stuck_reason
    assert saga.attempt == 2 and len(_charge_commands(saga)) == 2


def test_attempt_3_sent_10_seconds_ago_is_not_resent_yet_because_its_wait_has_doubled_twice(catalog):
    saga = _at_attempt(3)
    _date(saga, sent_ago=10)  # twice what attempt 1 waits, half what attempt 3 waits

    assert saga_sweep() == {"resent": 0, "stuck": 0, "failed": 0}

    saga.refresh_from_db()
    assert (saga.attempt, saga.stuck) == (3, False)
    assert len(_charge_commands(saga)) == 3  # no copy added to a queue that is only late

    _date(saga, sent_ago=RESEND_AFTER * 4 + 1)
    assert saga_sweep() == {"resent": 1, "stuck": 0, "failed": 0}
    saga.refresh_from_db()
    assert (saga.attempt, saga.stuck) == (4, False)
    assert len(_charge_commands(saga)) == 4


@pytest.mark.parametrize(("attempt", "wait"), [(1, RESEND_AFTER), (2, RESEND_AFTER * 2), (3, RESEND_AFTER * 4)])
def test_each_attempt_waits_twice_as_long_as_the_one_before_then_is_resent(catalog, attempt, wait):
    saga = _at_attempt(attempt)

    _date(saga, sent_ago=wait - 1)
    assert saga_sweep()["resent"] == 0
    assert len(_charge_commands(saga)) == attempt

    _date(saga, sent_ago=wait + 1)
    assert saga_sweep()["resent"] == 1
    saga.refresh_from_db()
    assert saga.attempt == attempt + 1 and not saga.stuck
    assert len(_charge_commands(saga)) == attempt + 1
