from django.db import migrations

APPEND_ONLY = """
CREATE OR REPLACE FUNCTION refuse_ledger_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER payments_ledgerentry_append_only
    BEFORE UPDATE OR DELETE ON payments_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();
"""


class Migration(migrations.Migration):
    dependencies = [("payments", "0001_initial")]

    operations = [
        migrations.RunSQL(
            APPEND_ONLY,
            reverse_sql="DROP TRIGGER IF EXISTS payments_ledgerentry_append_only ON payments_ledgerentry;",
        )
    ]
