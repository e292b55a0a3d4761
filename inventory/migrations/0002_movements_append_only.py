from django.db import migrations

from common.migrations import append_only


class Migration(migrations.Migration):
    dependencies = [("inventory", "0001_initial")]

    operations = [append_only("inventory_stockmovement", function="refuse_ledger_change")]
