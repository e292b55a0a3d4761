"""The operators' audit log is evidence: PostgreSQL refuses to change or delete its rows."""

from django.db import migrations

APPEND_ONLY = """
CREATE OR REPLACE FUNCTION refuse_audit_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER sagas_auditlog_append_only
    BEFORE UPDATE OR DELETE ON sagas_auditlog
    FOR EACH ROW EXECUTE FUNCTION refuse_audit_change();
"""


class Migration(migrations.Migration):
    dependencies = [("sagas", "0002_operators_group")]

    operations = [
        migrations.RunSQL(
            APPEND_ONLY,
            reverse_sql=(
                "DROP TRIGGER IF EXISTS sagas_auditlog_append_only ON sagas_auditlog;"
                " DROP FUNCTION IF EXISTS refuse_audit_change();"
            ),
        )
    ]
