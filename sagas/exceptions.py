class BusinessFailure(Exception):
    """A step failed for a business reason (declined card, no stock): compensate at once."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SagaActionRefused(Exception):
    """An operation is not valid in the saga's current state; the message says why."""


class CancellationRefused(SagaActionRefused):
    """The saga is past the point where it can be cancelled."""
