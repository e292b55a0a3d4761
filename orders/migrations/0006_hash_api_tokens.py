"""Store API tokens as their digests (orders.api.tokens): existing clients keep their keys."""

import hashlib

from django.db import migrations


def hash_tokens(apps, schema_editor):
    Token = apps.get_model("authtoken", "Token")
    length = Token._meta.get_field("key").max_length
    for key in list(Token.objects.values_list("key", flat=True)):
        Token.objects.filter(key=key).update(key=hashlib.sha256(key.encode()).hexdigest()[:length])


class Migration(migrations.Migration):
    dependencies = [("orders", "0005_notification_body"), ("authtoken", "0004_alter_tokenproxy_options")]

    # Not reversible: the keys are gone. Going back means issuing new ones (create_api_client --rotate).
    operations = [migrations.RunPython(hash_tokens, migrations.RunPython.noop)]
