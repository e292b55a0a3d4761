"""The stateful property test of issue 24: a few orders' sagas under any order of deliveries,
duplicates, failures, crashes after a provider call, dead letters and their replays, sweeps
with the clock moved on, operators' actions and stock going in and out; the money, stock,
shipment and email invariants hold after every step and at quiescence, and the auditor
reports nothing the invariants do not (see testing.saga_machine).

Bounded here (derandomized, a few examples); ``manage.py explore_sagas`` runs it long."""

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from testing.saga_machine import SagaMachine

BOUNDED = settings(
    derandomize=True,
    max_examples=15,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.django_db
def test_money_stock_and_shipments_stay_consistent_whatever_happens_to_the_messages():
    run_state_machine_as_test(SagaMachine, settings=BOUNDED)
