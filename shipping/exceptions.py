"""The shipping context's refusals. Its saga handlers' registration maps them to a business
failure of the step (sagas.participant), so nothing here knows the saga engine."""


class ShipmentRefused(Exception):
    """The shipment cannot be made or undone as asked: retrying cannot change the answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AddressNotServed(ShipmentRefused):
    """The carrier does not serve the address."""
