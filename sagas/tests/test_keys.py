"""The step key format, written once, and its SQL forms, which must agree with it."""

import uuid

import pytest
from django.db import connection

from payments.services import provider_key
from sagas.keys import (
    key_pattern,
    key_sql,
    parse_step_key,
    saga_id_in_key_sql,
    saga_keys_prefix,
    step_key,
    step_key_sql,
)


def test_a_step_key_names_its_saga_and_step_and_a_compensation_key_says_so():
    saga_id = uuid.uuid4()

    forward, compensation = step_key(saga_id, "charge_payment"), step_key(saga_id, "charge_payment", compensation=True)

    assert forward != compensation and compensation.startswith(forward)
    assert forward.startswith(saga_keys_prefix(saga_id))
    assert (parse_step_key(forward).saga_id, parse_step_key(forward).step) == (saga_id, "charge_payment")
    assert not parse_step_key(forward).compensation and parse_step_key(compensation).compensation
    assert parse_step_key(f"{forward}:late:ch_1").step == "charge_payment"


@pytest.mark.parametrize("key", ["planted", "api:1:abc", "k1:compensate", "", f"{uuid.uuid4()}"])
def test_a_key_made_outside_a_saga_names_none(key):
    assert parse_step_key(key) is None


@pytest.mark.django_db
def test_the_sql_forms_of_a_key_agree_with_the_function():
    saga_id = uuid.uuid4()

    def charge_key(saga: str) -> str:
        return provider_key(step_key(saga, "charge_payment"))

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {key_sql(charge_key, 'v.saga')}, {saga_id_in_key_sql(charge_key, 'v.key', exact=True)},"
            f" {saga_id_in_key_sql(charge_key, 'v.other', exact=True)},"
            f" {step_key_sql('v.saga', 'v.step', compensation=True)}"
            " FROM (SELECT %s::uuid AS saga, %s AS key, %s AS other, %s AS step) AS v",
            [str(saga_id), charge_key(str(saga_id)), charge_key(str(saga_id)) + ":x", "reserve_stock"],
        )
        made, read_back, not_a_charge_key, compensation_key = cursor.fetchone()

    assert made == charge_key(str(saga_id))
    assert read_back == saga_id
    assert not_a_charge_key is None
    assert compensation_key == step_key(saga_id, "reserve_stock", compensation=True)
    assert key_pattern(charge_key, exact=False).startswith("^pay:")
