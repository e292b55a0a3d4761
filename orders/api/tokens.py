"""Storefront API tokens, kept hashed: the database holds SHA-256 digests, never a usable key.

Whoever reads the database, a backup or a replica would otherwise hold every client's key and
could place orders as any of them. A key is 160 random bits (40 hex characters), so one round of
SHA-256 is enough (a slow password hash protects guessable secrets, which these are not), and
the lookup stays the one prepared query it was (orders.api.authentication): the digest, cut to
the 40 characters of DRF's ``Token.key``, is the row's key. The key itself is shown once, when
it is issued.
"""

import hashlib

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from rest_framework.authtoken.models import Token


def token_digest(key: str) -> str:
    """What is stored, and looked up, for ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()[: Token._meta.get_field("key").max_length]


def api_token_issue(*, user: AbstractBaseUser) -> str:
    """A new key for ``user``, replacing any earlier one (which stops working at once); the
    caller shows it to the client: it cannot be read back."""
    key = Token.generate_key()
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        Token.objects.create(user=user, key=token_digest(key))
    return key
