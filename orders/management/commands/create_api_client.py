"""Create a storefront API client (a user without staff rights) and print its token.

Idempotent: run it again and it prints the same token. Tokens can also be created, listed
and revoked in the admin (Auth Token > Tokens).
"""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Create a storefront API client and print its token (the existing one if it exists)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="the client's name, e.g. webshop-eu")

    def handle(self, *args, name: str, **options) -> None:
        User = get_user_model()
        try:
            name = User._meta.get_field(User.USERNAME_FIELD).clean(name, None)
        except ValidationError as exc:
            raise CommandError(f"invalid client name: {' '.join(exc.messages)}") from None
        with transaction.atomic():
            user, created = User.objects.get_or_create(**{User.USERNAME_FIELD: name}, defaults={"is_staff": False})
            if created:
                user.set_unusable_password()  # a client authenticates with its token only
                user.save(update_fields=["password"])
            elif user.is_staff or user.is_superuser:
                # A staff account's token would carry its admin rights into the storefront API.
                raise CommandError(f"{name} is a staff user, not a storefront client; pick another name")
            token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(token.key)
