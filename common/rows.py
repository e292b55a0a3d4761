"""Model instances whose rows a raw SQL statement wrote."""

from collections.abc import Sequence
from typing import Any

from django.db import connection, models


def mark_inserted(instance: models.Model, names: Sequence[str], returned: Sequence[Any]) -> None:
    """An instance whose row an ``INSERT ... RETURNING`` just wrote: it takes the values the
    database returned (its id, its default times) and becomes a saved instance of the default
    database, as ``save()`` would have left it."""
    for name, value in zip(names, returned, strict=True):
        setattr(instance, name, value)
    instance._state.adding = False
    instance._state.db = connection.alias
