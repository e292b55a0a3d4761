"""One final outcome per step key, kept in each participant's own books.

The first decision a participant records under a step's idempotency key is final for every
later copy of that command: a resend, a replayed dead letter, a backlog that drains, an
operator's retry or "done by hand". Each context owns a table of these records (a concrete
subclass of :class:`StepOutcomeBase`), and the saga participant wrapper takes every decision
under a row lock on the key, in the transaction of the effect it decides:

- two copies of one step serialise on that lock, so they can never both decide (a check made
  before the lock, e.g. "already reserved?", could be passed by both);
- a compensation locks the key of the step it undoes first; finding it undecided, it records
  the step compensated, so a late forward copy that arrives after it answers with that outcome
  and takes no effect (the late copy's outside call, if it made one, is undone by its handler).
"""

from dataclasses import dataclass
from typing import Any

from django.db import connection, models
from django.db.models.functions import Now
from psycopg.types.json import Jsonb

from common.rows import column_names, dict_from_row, insert_statement


class Decision(models.TextChoices):
    DONE = "done", "done"
    REFUSED = "refused", "refused as a business failure"
    MANUAL = "manual", "done by hand"
    COMPENSATED = "compensated", "compensated before it took effect"


class StepOutcomeBase(models.Model):
    """The participant's record of one step key. An empty ``outcome`` is a row being decided
    right now (it exists only inside the deciding transaction, or not at all)."""

    id = models.BigAutoField(primary_key=True)
    step_key = models.CharField(max_length=300, unique=True)
    outcome = models.CharField(max_length=20, choices=Decision.choices, blank=True)
    data = models.JSONField(default=dict, blank=True, help_text="the reply's data, given again to every later copy")
    error = models.TextField(blank=True)
    evidence = models.TextField(blank=True, help_text="what an operator gave when doing the step by hand")
    decided_by = models.CharField(max_length=150, blank=True, help_text="an operator, or empty for the system")
    message_id = models.UUIDField(null=True, blank=True, help_text="the command that decided")
    created_at = models.DateTimeField(db_default=Now())
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.step_key}: {self.outcome or 'deciding'}"


@dataclass
class OutcomeRecord:
    """A locked record, as the participant wrapper reads and decides it."""

    step_key: str
    outcome: str
    data: dict[str, Any]
    error: str
    evidence: str

    @property
    def decided(self) -> bool:
        return bool(self.outcome)


class OutcomeBook:
    """The statements on one context's table of outcomes, written once from its ``_meta``."""

    def __init__(self, model: type[StepOutcomeBase]) -> None:
        self.model = model
        table = model._meta.db_table
        # One statement claims the key and locks its row: an insert of the empty record, or,
        # when the key has a row, a no-op update of it, which locks it as FOR UPDATE would (and
        # waits, as FOR UPDATE would, for a transaction deciding the key right now).
        self._lock = insert_statement(
            model,
            on_conflict="ON CONFLICT (step_key) DO UPDATE SET step_key = EXCLUDED.step_key",
            returning=("step_key", "outcome", "data", "error", "evidence"),
        )
        self._peek_sql = f"SELECT outcome FROM {table} WHERE step_key = %s"
        self._decide_sql = (
            f"UPDATE {table} SET outcome = %s, data = %s, error = %s, evidence = %s, decided_by = %s,"
            " message_id = %s, decided_at = now() WHERE step_key = %s"
        )

    def lock(self, step_key: str) -> OutcomeRecord:
        """The record of ``step_key``, locked until the end of the transaction; created empty
        when there is none. A concurrent transaction deciding the same key holds it until it
        commits or rolls back: the claim waits for it, then reads what it decided."""
        with connection.cursor() as cursor:
            cursor.execute(self._lock.sql, self._lock.params({"step_key": step_key}))
            row = dict_from_row(self.model, column_names(cursor), cursor.fetchone())
        return OutcomeRecord(row["step_key"], row["outcome"], row["data"] or {}, row["error"], row["evidence"])

    def peek(self, step_key: str) -> str:
        """The outcome recorded under ``step_key`` as last committed, without a lock: only to
        spare an outside call whose result would be ignored, never to decide."""
        with connection.cursor() as cursor:
            cursor.execute(self._peek_sql, [step_key])
            row = cursor.fetchone()
        return row[0] if row else ""

    def decide(
        self,
        record: OutcomeRecord,
        outcome: str,
        *,
        data: dict[str, Any] | None = None,
        error: str = "",
        evidence: str = "",
        decided_by: str = "",
        message_id: str | None = None,
    ) -> None:
        assert not record.decided, f"{record.step_key} was decided already ({record.outcome})"
        with connection.cursor() as cursor:
            cursor.execute(
                self._decide_sql,
                [outcome, Jsonb(data or {}), error, evidence, decided_by, message_id, record.step_key],
            )
        record.outcome, record.data, record.error, record.evidence = outcome, data or {}, error, evidence
