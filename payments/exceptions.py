"""The payments context's refusals. Its saga handlers' registration maps them to a business
failure of the step (sagas.participant), so nothing here knows the saga engine."""


class PaymentRefused(Exception):
    """The books refuse the command: retrying it cannot change the answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PaymentDeclined(PaymentRefused):
    """The gateway declined the charge."""
