"""The inventory context's refusals."""


class ReservationRefused(Exception):
    """Stock cannot be reserved for the order: retrying cannot change the answer. The saga
    handlers' registration maps it to a business failure of the step (sagas.participant)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutOfStock(ReservationRefused):
    """Fewer units are available than the order asks for."""
