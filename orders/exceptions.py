class OrderError(Exception):
    """Base of the orders context's domain errors."""


class InvalidOrder(OrderError):
    """The order cannot be placed as given; ``errors`` maps fields to messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{field}: {', '.join(msgs)}" for field, msgs in errors.items()))
        self.errors = errors


class OrderNotCancellable(OrderError):
    """The order is past the point where it can be cancelled."""


class IdempotencyError(Exception):
    """Base of the errors of the storefront's idempotency keys."""


class IdempotencyKeyInUse(IdempotencyError):
    """Another request with the same key is still being processed: the client may retry."""


class IdempotencyKeyReused(IdempotencyError):
    """The key was already used for a different request (method, path or body)."""
