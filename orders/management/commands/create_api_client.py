"""Create a storefront API client (a user without staff rights) and print its token.

The token is stored hashed (orders.api.tokens) and printed once: run it again for a client
that has one and it refuses, unless ``--rotate`` asks for a new token (the old one stops
working at once). Superusers can list and revoke tokens in the admin (Auth Token > Tokens).
"""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token

from orders.api.tokens import api_token_issue


class Command(BaseCommand):
    help = "Create a storefront API client and print its token (shown once: it is stored hashed)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="the client's name, e.g. webshop-eu")
        parser.add_argument("--rotate", action="store_true", help="replace the client's token with a new one")

    def handle(self, *args, name: str, rotate: bool, **options) -> None:
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
            if Token.objects.filter(user=user).exists() and not rotate:
                raise CommandError(
                    f"{name} already has a token; it is stored hashed and cannot be shown again. "
                    "Pass --rotate to issue a new one (the old one stops working at once)."
                )
            key = api_token_issue(user=user)
        self.stdout.write(key)
