"""Token authentication of storefront clients, as DRF's TokenAuthentication, with its one
query (the token and its user) written once as SQL and prepared: every API request runs it."""

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from common.rows import column_names, instance_from_row, select_columns
from orders.api.throttling import StorefrontAddressThrottle
from orders.api.tokens import token_digest

User = get_user_model()
_KEY_MAX_LENGTH = Token._meta.get_field("key").max_length
_SQL = "SELECT {}, {} FROM {} token JOIN {} client ON client.{} = token.{} WHERE token.{} = %s".format(
    select_columns(Token, alias="token", prefix="token__"),
    select_columns(User, alias="client", prefix="client__"),
    Token._meta.db_table,
    User._meta.db_table,
    User._meta.pk.column,
    Token._meta.get_field("user").column,
    Token._meta.get_field("key").column,
)


class StorefrontTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``; the same answers as DRF's for unknown keys and inactive users.

    A request that names no client (no token, or a bad one) first takes from its address's
    budget (``StorefrontAddressThrottle``), and beyond it is answered 429 rather than 401.
    """

    def authenticate(self, request) -> tuple | None:
        try:
            authenticated = super().authenticate(request)
        except exceptions.AuthenticationFailed:
            _take_from_address(request)
            raise
        if authenticated is None:
            _take_from_address(request)
        return authenticated

    def authenticate_credentials(self, key: str) -> tuple:
        # A key is 40 hex characters; anything PostgreSQL cannot even compare (a NUL) or that
        # could never match is simply not a token.
        if len(key) > _KEY_MAX_LENGTH or "\x00" in key:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        with connection.cursor() as cursor:
            cursor.execute(_SQL, [token_digest(key)])  # stored hashed (orders.api.tokens)
            names, row = column_names(cursor), cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        token = instance_from_row(Token, names, row, prefix="token__")
        user = instance_from_row(User, names, row, prefix="client__")
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        token.user = user
        return user, token


def _take_from_address(request) -> None:
    throttle = StorefrontAddressThrottle()
    if not throttle.allow_request(request, None):
        raise exceptions.Throttled(wait=throttle.wait())
