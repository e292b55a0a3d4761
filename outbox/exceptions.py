class OutsideTransaction(RuntimeError):
    """publish() was called outside transaction.atomic(): the message could outlive a rollback."""


class PoisonMessage(ValueError):
    """A message that can never be handled (unparseable envelope or payload, unknown type).

    Retrying it is pointless, so it goes straight to a dead letter with this reason.
    """


class BrokerUnconfirmed(RuntimeError):
    """The broker did not confirm every message of a batch: none of it may be marked published."""
