"""Raw SQL generated from a model's ``_meta``, and model instances loaded from its rows.

Where a benchmark justifies a hand-run statement (see the figure beside each use), its
column lists, placeholders, defaults and row loading come from here, never typed by hand: a
field added to the model, with its default, is in every statement the next time it is built.

- ``insert_statement(Model)``: ``INSERT INTO ... (every concrete field but an auto pk) VALUES
  ... RETURNING ...``. A field the caller leaves out takes its Python default (``default=``),
  or its ``db_default`` (the database's expression, inlined), or what the ORM would write
  (``""`` for text, ``None`` for a nullable field) -- the same value ``Model.objects.create``
  writes, as the parity tests compare field by field.
- ``insert_rows_statement(Model)``: the same for many rows in one statement, one array per
  column through ``unnest`` (one round trip for any number of rows).
- ``update_statement(Model)``: ``UPDATE ... SET every column but the pk ... WHERE pk = %s``,
  what ``save()`` of a loaded instance writes.
- ``select_columns(Model)``: a SELECT (or RETURNING) list of the model's columns.
- ``instance_from_row`` / ``dict_from_row``: a row loaded by its columns' names (the cursor's
  description), never by position; ``instances_of_cursor`` / ``dicts_of_cursor``: all of a
  cursor's rows so.

The statements' text is constant per model and arguments (built once, cached), so that psycopg
prepares each on a connection after a few runs.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from django.db import connection, models
from django.db.models.expressions import DatabaseDefault
from django.db.models.sql import Query

M = TypeVar("M", bound=models.Model)

# Fields whose Python value psycopg adapts as the ORM would: no get_db_prep_save() per value.
_NATIVE = {
    "AutoField",
    "BigAutoField",
    "BigIntegerField",
    "BooleanField",
    "CharField",
    "DateField",
    "DateTimeField",
    "EmailField",
    "ForeignKey",
    "IntegerField",
    "PositiveBigIntegerField",
    "PositiveIntegerField",
    "PositiveSmallIntegerField",
    "SlugField",
    "SmallIntegerField",
    "TextField",
    "UUIDField",
}


def mark_inserted(instance: models.Model, names: Sequence[str], returned: Sequence[Any]) -> None:
    """An instance whose row an ``INSERT ... RETURNING`` just wrote: it takes the values the
    database returned (its id, its default times) and becomes a saved instance of the default
    database, as ``save()`` would have left it."""
    for name, value in zip(names, returned, strict=True):
        setattr(instance, name, value)
    instance._state.adding = False
    instance._state.db = connection.alias


def inserted_fields(model: type[models.Model]) -> list[models.Field]:
    """The fields an INSERT writes: every concrete field but an auto-generated primary key."""
    return [field for field in model._meta.concrete_fields if not _is_auto_pk(field)]


def select_columns(
    model: type[models.Model], *, names: Sequence[str] | None = None, alias: str = "", prefix: str = ""
) -> str:
    """``alias.column, ...`` of the model's concrete fields (or of the attnames ``names``);
    with ``prefix``, each is named ``<prefix><column>`` (two tables' columns in one row)."""
    fields = model._meta.concrete_fields if names is None else [_field(model, name) for name in names]
    quote = connection.ops.quote_name
    table = f"{alias}." if alias else ""
    return ", ".join(
        table + quote(field.column) + (f" AS {quote(prefix + field.column)}" if prefix else "") for field in fields
    )


@dataclass(frozen=True)
class Statement:
    """A generated statement and how to bind it: ``params(values)`` takes the values by
    attname and fills in each left-out field's default."""

    sql: str
    bind: Callable[[Mapping[str, Any]], list[Any]]
    returning: tuple[str, ...]

    def params(self, values: Mapping[str, Any]) -> list[Any]:
        return self.bind(values)


def insert_statement(
    model: type[models.Model],
    *,
    expressions: Mapping[str, str] | None = None,
    on_conflict: str = "",
    returning: Sequence[str] | None = None,
) -> Statement:
    """``INSERT INTO <table> (<inserted_fields>) VALUES (...) <on_conflict> RETURNING <returning>``.

    ``expressions``: attname -> an SQL expression with one ``%s`` bound to the value given
    under that name (e.g. a time computed by the database). ``on_conflict``: an ``ON CONFLICT``
    clause without parameters. ``returning``: attnames, by default the primary key and every
    field whose value the database decides (db_default, ``expressions``)."""
    return _insert_statement(model, tuple(sorted((expressions or {}).items())), on_conflict, _names(returning))


def insert_rows_statement(
    model: type[models.Model],
    *,
    expressions: Mapping[str, str] | None = None,
    returning: Sequence[str] | None = None,
) -> Statement:
    """Many rows in one ``INSERT ... SELECT ... FROM unnest(<one array per column>)``.

    ``params(values)`` takes one list per attname (all of one length); a left-out field gets
    its default on every row. ``expressions``: attname -> an SQL expression without
    parameters (e.g. ``(SELECT id FROM placed)`` for a foreign key inserted beside it)."""
    return _insert_rows_statement(model, tuple(sorted((expressions or {}).items())), _names(returning))


@cache
def update_statement(model: type[models.Model], *, exclude: tuple[str, ...] = ()) -> Statement:
    """``UPDATE <table> SET <every column but the pk and exclude> WHERE pk = %s``: what
    ``save()`` of a loaded instance writes. ``params(values)`` takes them by attname."""
    pk = model._meta.pk
    fields = [field for field in model._meta.concrete_fields if not field.primary_key and field.attname not in exclude]
    quote = connection.ops.quote_name
    sql = "UPDATE {} SET {} WHERE {} = %s".format(
        quote(model._meta.db_table), ", ".join(f"{quote(field.column)} = %s" for field in fields), quote(pk.column)
    )
    preps = [(field.attname, _prep(field)) for field in [*fields, pk]]

    def bind(values: Mapping[str, Any]) -> list[Any]:
        return [prep(values[name]) for name, prep in preps]

    return Statement(sql, bind, ())


def instance_values(instance: models.Model) -> dict[str, Any]:
    """An instance's field values by attname, as a statement's ``params`` takes them."""
    return {field.attname: getattr(instance, field.attname) for field in instance._meta.concrete_fields}


def instance_from_row(model: type[M], names: Sequence[str], row: Sequence[Any], *, prefix: str = "") -> M:
    """A saved instance from a row whose columns are ``names`` (``column_names(cursor)``), in
    any order; columns that are not the model's (or lack ``prefix``) are ignored, missing
    fields are deferred."""
    return _instance_loader(model, tuple(names), prefix)(row)


def dict_from_row(model: type[models.Model], names: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """A row as ``{attname: value}``, each value converted as the ORM reads it (jsonb, which a
    raw cursor hands back as text, decoded)."""
    return _dict_loader(model, tuple(names))(row)


def column_names(cursor: Any) -> tuple[str, ...]:
    return tuple(column.name for column in cursor.description)


def instances_of_cursor(model: type[M], cursor: Any) -> list[M]:
    """Every row the cursor's statement returned, as saved instances (one loader for all)."""
    load = _instance_loader(model, column_names(cursor), "")
    return [load(row) for row in cursor.fetchall()]


def dicts_of_cursor(model: type[models.Model], cursor: Any) -> list[dict[str, Any]]:
    """Every row the cursor's statement returned, as ``dict_from_row`` gives one (one loader
    for all: a batch of the relay is hundreds of rows)."""
    load = _dict_loader(model, column_names(cursor))
    return [load(row) for row in cursor.fetchall()]


# ---------------------------------------------------------------------------------------------


def _names(names: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if names is None else tuple(names)


def _is_auto_pk(field: models.Field) -> bool:
    return field.primary_key and isinstance(field, models.AutoField | models.BigAutoField | models.SmallAutoField)


def _field(model: type[models.Model], attname: str) -> models.Field:
    for field in model._meta.concrete_fields:
        if field.attname == attname:
            return field
    raise LookupError(f"{model.__name__} has no concrete field {attname!r}")


def _prep(field: models.Field) -> Callable[[Any], Any]:
    if field.get_internal_type() in _NATIVE:
        return _same
    return lambda value: field.get_db_prep_save(value, connection)


def _same(value: Any) -> Any:
    return value


def _left_out(field: models.Field) -> Callable[[], Any]:
    """The value a left-out field gets, as ``Model()`` gives it: the Python default (called
    anew for each row, e.g. ``uuid4``), or what the ORM writes for a field without one."""
    if field.has_default():
        return field.get_default
    default = None if field.null else ("" if field.empty_strings_allowed else None)
    return lambda: default


def _db_default_sql(model: type[models.Model], field: models.Field) -> tuple[str, list[Any]]:
    query = Query(model)
    expression = field._db_default_expression.resolve_expression(query, allow_joins=False)
    return query.get_compiler(connection=connection).compile(expression)


def _given(values: Mapping[str, Any], name: str) -> Any:
    value = values.get(name)
    return None if isinstance(value, DatabaseDefault) else value


@cache
def _insert_statement(
    model: type[models.Model],
    expressions: tuple[tuple[str, str], ...],
    on_conflict: str,
    returning: tuple[str, ...] | None,
) -> Statement:
    given_sql = dict(expressions)
    quote = connection.ops.quote_name
    placeholders: list[str] = []
    binders: list[Callable[[Mapping[str, Any]], list[Any]]] = []
    decided = [model._meta.pk.attname] if _is_auto_pk(model._meta.pk) else []
    for field in inserted_fields(model):
        name, prep = field.attname, _prep(field)
        if name in given_sql:
            placeholders.append(given_sql[name])
            binders.append(lambda values, name=name: [values[name]])
            decided.append(name)
        elif field.has_db_default() and not field.has_default():
            # The database's default unless a value is given (an explicit None takes the default).
            default_sql, default_params = _db_default_sql(model, field)
            placeholders.append(f"COALESCE(%s, {default_sql})")
            binders.append(
                lambda values, name=name, prep=prep, extra=default_params: [
                    None if (value := _given(values, name)) is None else prep(value),
                    *extra,
                ]
            )
            decided.append(name)
        else:
            left_out = _left_out(field)
            binders.append(
                lambda values, name=name, prep=prep, left_out=left_out: [
                    prep(values[name] if name in values else left_out())
                ]
            )
            placeholders.append("%s")
    returned = tuple(decided) if returning is None else returning
    sql = "INSERT INTO {} ({}) VALUES ({})".format(
        quote(model._meta.db_table),
        ", ".join(quote(field.column) for field in inserted_fields(model)),
        ", ".join(placeholders),
    )
    if on_conflict:
        sql += f" {on_conflict}"
    if returned:
        sql += " RETURNING " + select_columns(model, names=returned)

    def bind(values: Mapping[str, Any]) -> list[Any]:
        params: list[Any] = []
        for binder in binders:
            params.extend(binder(values))
        return params

    return Statement(sql, bind, returned)


@cache
def _insert_rows_statement(
    model: type[models.Model], expressions: tuple[tuple[str, str], ...], returning: tuple[str, ...] | None
) -> Statement:
    given_sql = dict(expressions)
    quote = connection.ops.quote_name
    selected: list[str] = []
    arrays: list[tuple[models.Field, Callable[[], Any]]] = []
    extra: list[Any] = []
    decided = [model._meta.pk.attname] if _is_auto_pk(model._meta.pk) else []
    for field in inserted_fields(model):
        if field.attname in given_sql:
            selected.append(given_sql[field.attname])
            decided.append(field.attname)
        elif field.has_db_default() and not field.has_default():
            default_sql, default_params = _db_default_sql(model, field)
            selected.append(default_sql)
            extra.extend(default_params)  # the select list comes before the arrays in the text
            decided.append(field.attname)
        else:
            selected.append(f"line.{quote(field.column)}")
            arrays.append((field, _left_out(field)))
    unnest = ", ".join(f"%s::{field.db_type(connection)}[]" for field, _ in arrays)
    sql = "INSERT INTO {} ({}) SELECT {} FROM unnest({}) AS line({})".format(
        quote(model._meta.db_table),
        ", ".join(quote(field.column) for field in inserted_fields(model)),
        ", ".join(selected),
        unnest,
        ", ".join(quote(field.column) for field, _ in arrays),
    )
    returned = tuple(decided) if returning is None else returning
    if returned:
        sql += " RETURNING " + select_columns(model, names=returned)
    preps = [(field.attname, _prep(field), left_out) for field, left_out in arrays]

    def bind(values: Mapping[str, Sequence[Any]]) -> list[Any]:
        count = len(next(iter(values.values()))) if values else 0
        columns = [
            [prep(value) for value in values[name]] if name in values else [prep(left_out()) for _ in range(count)]
            for name, prep, left_out in preps
        ]
        return [*extra, *columns]

    return Statement(sql, bind, returned)


@cache
def _loading(model: type[models.Model], names: tuple[str, ...]) -> tuple[list[int | None], list[tuple[int, Any]]]:
    """For each concrete field, the index of its column in ``names`` (None: not there), and
    the converters (index, from_db_value) of the columns that need one."""
    by_column = {name: index for index, name in enumerate(names)}
    fields = model._meta.concrete_fields
    indexes = [by_column.get(field.column, by_column.get(field.attname)) for field in fields]
    converters = [
        (index, _from_db(field))
        for field, index in zip(fields, indexes, strict=True)
        if index is not None and hasattr(field, "from_db_value")
    ]
    return indexes, converters


def _from_db(field: models.Field) -> Callable[[Any, Any, Any], Any]:
    def convert(value: Any, expression: Any, connection: Any) -> Any:
        # A raw cursor hands jsonb back as text; a value already decoded is kept.
        return field.from_db_value(value, expression, connection) if isinstance(value, str) else value

    return convert


@cache
def _instance_loader(model: type[M], names: tuple[str, ...], prefix: str) -> Callable[[Sequence[Any]], M]:
    if prefix:
        names = tuple(name.removeprefix(prefix) if name.startswith(prefix) else "" for name in names)
    indexes, converters = _loading(model, names)
    present = [
        field.attname for field, index in zip(model._meta.concrete_fields, indexes, strict=True) if index is not None
    ]
    taken = [index for index in indexes if index is not None]
    alias = connection.alias

    def load(row: Sequence[Any]) -> M:
        row = list(row)
        for index, convert in converters:
            row[index] = convert(row[index], None, connection)
        return model.from_db(alias, present, [row[index] for index in taken])

    return load


@cache
def _dict_loader(model: type[models.Model], names: tuple[str, ...]) -> Callable[[Sequence[Any]], dict[str, Any]]:
    indexes, converters = _loading(model, names)
    pairs = [
        (field.attname, index)
        for field, index in zip(model._meta.concrete_fields, indexes, strict=True)
        if index is not None
    ]

    def load(row: Sequence[Any]) -> dict[str, Any]:
        row = list(row)
        for index, convert in converters:
            row[index] = convert(row[index], None, connection)
        return {name: row[index] for name, index in pairs}

    return load
