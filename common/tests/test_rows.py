"""The raw statements generated from the models write and read what the ORM does."""

import datetime
import uuid

import pytest
from django.db import connection, models, transaction
from django.test.utils import isolate_apps

from common.rows import (
    column_names,
    dict_from_row,
    insert_rows_statement,
    insert_statement,
    inserted_fields,
    instance_from_row,
    select_columns,
    update_statement,
)
from orders.models import Order, OrderLine
from orders.rows import NewLine, order_insert
from outbox.models import OutboxMessage
from outbox.publishing import publish
from outbox.relay import claim_committed
from sagas.locks import lock_saga
from sagas.models import SagaInstance, SagaStep
from sagas.rows import saga_insert, saga_save, step_record_sent

# Set by the database, so never equal between two rows written at different times.
_TIMES = {"created_at", "updated_at", "available_at", "sent_at"}


def _fields(instance: models.Model, *, skip: set[str] = frozenset()) -> dict:
    return {
        field.attname: getattr(instance, field.attname)
        for field in instance._meta.concrete_fields
        if not field.primary_key and field.attname not in _TIMES | skip
    }


def _reloaded(instance: models.Model) -> models.Model:
    return type(instance).objects.get(pk=instance.pk)


def test_every_generated_statement_names_every_concrete_field():
    from orders.models import IdempotencyKey, Notification
    from payments.models import StepOutcome as PaymentStepOutcome

    for model in (
        OutboxMessage,
        SagaInstance,
        SagaStep,
        Order,
        OrderLine,
        Notification,
        IdempotencyKey,
        PaymentStepOutcome,
    ):
        columns = [field.column for field in model._meta.concrete_fields if not isinstance(field, models.AutoField)]
        statement = insert_statement(model).sql
        listed = statement[statement.index("(") + 1 : statement.index(")")]
        assert [name.strip().strip('"') for name in listed.split(",")] == columns, model
        assert select_columns(model) == ", ".join(f'"{field.column}"' for field in model._meta.concrete_fields)


@isolate_apps("outbox")
def test_a_field_added_with_a_default_is_written_by_the_generated_insert():
    class Widened(models.Model):  # noqa: DJ008 - never shown
        id = models.BigAutoField(primary_key=True)
        name = models.CharField(max_length=10)
        priority = models.PositiveIntegerField(default=7)
        tags = models.JSONField(default=list)
        stamped = models.DateTimeField(db_default=models.functions.Now())

        class Meta:
            app_label = "outbox"

    statement = insert_statement(Widened)
    assert '"priority"' in statement.sql and '"tags"' in statement.sql
    assert "COALESCE(%s, STATEMENT_TIMESTAMP())" in statement.sql
    params = statement.params({"name": "x"})
    assert params[0] == "x" and params[1] == 7 and params[2].obj == []  # the defaults, from the fields
    assert statement.returning == ("id", "stamped")
    rows = insert_rows_statement(Widened).params({"name": ["a", "b"]})
    assert rows == [["a", "b"], [7, 7], [rows[2][0], rows[2][1]]] and rows[2][0].obj == []


@pytest.mark.django_db
def test_a_published_message_is_the_row_the_orm_writes():
    with transaction.atomic():
        raw = publish(type="ping", destination="default", payload={"n": 1}, aggregate="test", aggregate_id=1)
    orm = OutboxMessage.objects.create(
        type="ping", destination="default", payload={"n": 1}, aggregate="test", aggregate_id="1"
    )
    assert _fields(_reloaded(raw), skip={"message_id"}) == _fields(_reloaded(orm), skip={"message_id"})
    assert _fields(raw) == _fields(_reloaded(raw))
    assert raw.created_at == _reloaded(raw).created_at and raw.available_at == _reloaded(raw).available_at


@pytest.mark.django_db(transaction=True)  # claimed once available: after its commit
def test_a_claimed_message_reads_as_the_orm_reads_it():
    message = OutboxMessage.objects.create(
        type="ping", destination="default", payload={"n": [1]}, headers={"h": "v"}, aggregate="t", aggregate_id="2"
    )
    with transaction.atomic():
        (row,) = claim_committed([message.pk])
    orm = OutboxMessage.objects.values(*row).get(pk=message.pk)
    assert row == orm


@pytest.mark.django_db
def test_a_saga_inserted_and_saved_raw_is_the_row_the_orm_writes():
    def saga(**extra) -> SagaInstance:
        return SagaInstance(definition_name="test", definition_version=1, aggregate="order", data={"a": 1}, **extra)

    raw, orm = saga(aggregate_id="raw"), saga(aggregate_id="orm")
    saga_insert(raw)
    orm.save(force_insert=True)
    assert _fields(_reloaded(raw), skip={"aggregate_id"}) == _fields(_reloaded(orm), skip={"aggregate_id"})
    assert raw.created_at == _reloaded(raw).created_at

    with transaction.atomic():
        raw, orm = lock_saga(raw.pk), lock_saga(orm.pk)
        for instance in (raw, orm):
            instance.current_step, instance.attempt = "charge_payment", 2
            instance.completed_steps = ["create_order"]
            instance.step_deadline = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
        saga_save(raw)
        orm.save()
    assert _fields(_reloaded(raw), skip={"aggregate_id"}) == _fields(_reloaded(orm), skip={"aggregate_id"})
    assert _fields(raw) == _fields(_reloaded(raw))


@pytest.mark.django_db
def test_a_step_recorded_raw_is_the_row_the_orm_writes():
    saga = SagaInstance.objects.create(definition_name="t", definition_version=1, aggregate="o", aggregate_id="1")
    values = dict(saga_id=saga.pk, step="charge", phase="forward", idempotency_key="k", command_type="c")
    raw = step_record_sent(**values, attempt=1, message_id=uuid.uuid4())
    orm = SagaStep.objects.create(**values, attempt=2, command_message_id=raw.command_message_id)
    skip = {"attempt"}
    assert _fields(_reloaded(raw), skip=skip) == _fields(_reloaded(orm), skip=skip)
    assert _fields(raw) == _fields(_reloaded(raw)) and raw.sent_at == _reloaded(raw).sent_at


@pytest.mark.django_db
def test_an_order_inserted_raw_is_the_rows_the_orm_writes():
    common = dict(
        client_id=None,
        customer_email="a@example.com",
        customer_name="A",
        shipping_address={"country": "FR"},
        total_amount=300,
        currency="EUR",
    )
    lines = [NewLine(sku="B", name="b", quantity=1, unit_price_amount=100), NewLine("A", "a", 2, 100)]
    raw = order_insert(**common, saga_id=uuid.uuid4(), lines=lines)
    orm = Order.objects.create(**common, saga_id=uuid.uuid4())
    OrderLine.objects.bulk_create(OrderLine(order=orm, currency="EUR", **vars(line)) for line in lines)
    assert _fields(_reloaded(raw), skip={"saga_id"}) == _fields(_reloaded(orm), skip={"saga_id"})
    assert _fields(raw) == _fields(_reloaded(raw)) and raw.created_at == _reloaded(raw).created_at

    def line_rows(order: Order) -> list[dict]:
        return [_fields(line, skip={"order_id"}) for line in OrderLine.objects.filter(order=order).order_by("pk")]

    assert line_rows(raw) == line_rows(orm)
    assert [_fields(line) for line in raw.lines.all()] == [_fields(line) for line in _reloaded(raw).lines.all()]


@pytest.mark.django_db
def test_a_row_is_loaded_by_its_columns_names_in_any_order():
    saga = SagaInstance.objects.create(definition_name="t", definition_version=1, aggregate="o", aggregate_id="2")
    with connection.cursor() as cursor:
        cursor.execute("SELECT data, id, definition_name FROM sagas_sagainstance WHERE id = %s", [saga.pk])
        names, row = column_names(cursor), cursor.fetchone()
    loaded = instance_from_row(SagaInstance, names, row)
    assert (loaded.pk, loaded.definition_name, loaded.data) == (saga.pk, "t", {})
    assert dict_from_row(SagaInstance, names, row) == {"id": saga.pk, "definition_name": "t", "data": {}}


def test_an_update_writes_every_column_but_the_key_and_those_excluded():
    statement = update_statement(SagaInstance, exclude=("created_at",))
    expected = [
        field.column
        for field in SagaInstance._meta.concrete_fields
        if not field.primary_key and field.attname != "created_at"
    ]
    assert statement.sql.count("= %s") == len(expected) + 1
    assert all(f'"{column}" = %s' in statement.sql for column in expected)
    assert [field.attname for field in inserted_fields(SagaInstance)][0] == "id"  # not an auto key: inserted


@pytest.mark.django_db
def test_two_tables_read_in_one_row_load_by_their_prefixes():
    from django.contrib.auth import get_user_model

    User = get_user_model()
    user = User.objects.create_user(username="prefixed", email="p@example.com")
    sql = "SELECT {}, {} FROM auth_user a JOIN auth_user b ON b.id = a.id WHERE a.id = %s".format(
        select_columns(User, alias="a", prefix="a__"), select_columns(User, alias="b", prefix="b__")
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [user.pk])
        names, row = column_names(cursor), cursor.fetchone()
    for prefix in ("a__", "b__"):
        loaded = instance_from_row(User, names, row, prefix=prefix)
        assert _fields(loaded) == _fields(User.objects.get(pk=user.pk)) and loaded.pk == user.pk


@pytest.mark.django_db
def test_a_notification_inserted_raw_is_the_row_the_orm_writes():
    from orders.models import Notification
    from orders.notifications import notification_send

    def order(n: int) -> Order:
        return Order.objects.create(
            customer_email="n@example.com",
            customer_name="N",
            shipping_address={},
            total_amount=1,
            currency="EUR",
            saga_id=uuid.uuid4(),
        )

    raw = notification_send(order=order(1), kind=Notification.Kind.CONFIRMATION, body="b", told_by_hand="told")
    second = order(2)
    orm = Notification.objects.create(
        order=second, kind=raw.kind, recipient=raw.recipient, subject=raw.subject, body=raw.body
    )
    skip = {"order_id"}
    assert _fields(_reloaded(raw), skip=skip | {"subject"}) == _fields(_reloaded(orm), skip=skip | {"subject"})
    assert _fields(raw) == _fields(_reloaded(raw))
