"""Idempotent demo data: a catalog with stock, a demo operator and a storefront client token.

Running it twice changes nothing. The demo admin's password is random, generated on first
run and printed; it is never hard-coded, and the command refuses to run in production.

With ``--credentials-file`` the generated password is also kept in a file only the current
user can read, because the password is otherwise shown exactly once: the launcher passes it
so that every ``make run`` can show the operator how to log in, not only the first.
"""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from inventory.models import Product
from inventory.services import product_upsert, stock_receive

CATALOG = [
    ("SKU-1", "Espresso beans 1 kg", 1299, 500),
    ("SKU-2", "Burr grinder", 8999, 50),
    ("SKU-3", "Milk jug 600 ml", 1999, 120),
    ("SKU-4", "Tamper 58 mm", 2499, 80),
    ("SKU-5", "Descaler, 3 pack", 899, 300),
    ("SKU-6", "Cup set of 6", 3499, 40),
    ("SKU-7", "Cleaning brush", 499, 1000),
    ("SKU-8", "Limited edition kettle", 12999, 5),
]


class Command(BaseCommand):
    help = "Create the demo catalog with stock, a demo admin user and a storefront client (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--admin-username", default="admin")
        parser.add_argument("--allow-production", action="store_true", help="seed even when DEBUG is off")
        parser.add_argument(
            "--credentials-file",
            type=Path,
            default=None,
            metavar="PATH",
            help="also write the generated admin credentials here (mode 0600), and show them from here later",
        )

    def handle(
        self,
        *args,
        admin_username: str,
        allow_production: bool,
        credentials_file: Path | None = None,
        **options,
    ):
        if not settings.DEBUG and not allow_production:
            raise CommandError("refusing to create demo users with DEBUG off; pass --allow-production to insist")
        with transaction.atomic():
            created = 0
            for sku, name, price, stock in CATALOG:
                is_new = not Product.objects.filter(sku=sku).exists()
                product = product_upsert(sku=sku, name=name, price_amount=price)
                if is_new:
                    stock_receive(product=product, quantity=stock, idempotency_key=f"seed:{sku}")
                    created += 1
        self.stdout.write(f"catalog: {len(CATALOG)} products ({created} new)")
        token = demo_storefront_token()
        self.stdout.write(f"storefront API token (client demo-storefront): {token}")

        User = get_user_model()
        user = User.objects.filter(username=admin_username).first()
        if user is None:
            password = secrets.token_urlsafe(12)
            # One transaction with the file write: if the password cannot be kept, no user is
            # left behind whose password nobody knows.
            with transaction.atomic():
                User.objects.create_superuser(admin_username, f"{admin_username}@backoffice.example", password)
                if credentials_file is not None:
                    write_credentials(credentials_file, admin_username, password)
            self.stdout.write(f"admin user: {admin_username} / password: {password}")
            if credentials_file is not None:
                self.stdout.write(f"credentials written to {credentials_file}")
            return

        saved = read_credentials(credentials_file) if credentials_file is not None else None
        if saved is None or saved[0] != admin_username:
            self.stdout.write(f"admin user: {admin_username} (exists; password unchanged)")
        elif user.check_password(saved[1]):
            self.stdout.write(f"admin user: {admin_username} / password: {saved[1]} (exists; from {credentials_file})")
        else:
            # Someone changed the password since: showing the file's password would only send
            # the operator to a failed login.
            self.stdout.write(
                f"admin user: {admin_username} (exists; password changed since {credentials_file} was written)"
            )


def write_credentials(path: Path, username: str, password: str) -> None:
    """Write ``username: ...`` and ``password: ...`` lines readable by the owner only.

    The file is opened with mode 0600 rather than chmod-ed after writing, so the password is
    never readable by others, not even for an instant; an existing file is narrowed too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(f"username: {username}\npassword: {password}\n")


def read_credentials(path: Path) -> tuple[str, str] | None:
    """``(username, password)`` from a file written by :func:`write_credentials`, if readable."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    if not fields.get("username") or not fields.get("password"):
        return None
    return fields["username"], fields["password"]


def demo_storefront_token() -> str:
    """A demo storefront client, so that the API can be tried at once. Tokens are stored hashed
    and cannot be shown twice, so each run issues the demo client a new one."""
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("create_api_client", "demo-storefront", "--rotate", stdout=out)
    return out.getvalue().strip()
