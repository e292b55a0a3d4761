from django.db import migrations

APPEND_ONLY = """
CREATE OR REPLACE FUNCTION refuse_ledger_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER inventory_stockmovement_append_only
    BEFORE UPDATE OR DELETE ON inventory_stockmovement
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();
"""


class Migration(migrations.Migration):
    dependencies = [("inventory", "0001_initial")]

    operations = [
        migrations.RunSQL(
            APPEND_ONLY,
            reverse_sql="DROP TRIGGER IF EXISTS inventory_stockmovement_append_only ON inventory_stockmovement;",
        )
    ]
