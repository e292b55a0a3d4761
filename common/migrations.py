"""Migration operations shared by the apps' migrations."""

from django.db import migrations

_REFUSE_CHANGE = """
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER {table}_append_only
    BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION {function}();
"""


def append_only(table: str, *, function: str, drop_function: bool = False) -> migrations.RunSQL:
    """A trigger that makes PostgreSQL refuse every UPDATE and DELETE on ``table``: a ledger
    or an audit log is evidence, and a bug or a hand-written statement must not be able to
    rewrite it. ``function`` is the trigger function, created or replaced (one may serve several
    tables); ``drop_function`` also drops it when the migration is reversed, for a function that
    serves this table alone."""
    reverse_sql = f"DROP TRIGGER IF EXISTS {table}_append_only ON {table};"
    if drop_function:
        reverse_sql += f" DROP FUNCTION IF EXISTS {function}();"
    return migrations.RunSQL(_REFUSE_CHANGE.format(table=table, function=function), reverse_sql=reverse_sql)


def trigram_index(*, name: str, create_sql: str) -> migrations.RunPython:
    """A trigram (``pg_trgm``) index where the server has the extension; where it has not (the
    embedded PostgreSQL of ``make run`` on a bare laptop), nothing: searches then scan, slower
    and still correct. ``create_sql`` is the ``CREATE INDEX`` statement."""

    def create(apps, schema_editor) -> None:
        with schema_editor.connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
            if cursor.fetchone() is None:
                print(f"\n  pg_trgm is not available: {name} is not created (search scans instead)")
                return
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            cursor.execute(create_sql)

    def drop(apps, schema_editor) -> None:
        schema_editor.execute(f'DROP INDEX IF EXISTS "{name}"')

    return migrations.RunPython(create, drop)
