from django.db import migrations

from common.migrations import append_only


class Migration(migrations.Migration):
    dependencies = [("payments", "0001_initial")]

    operations = [append_only("payments_ledgerentry", function="refuse_ledger_change")]
