"""What the auditor refuses an operator, with the reason to show them."""


class ViolationActionRefused(Exception):
    """An acknowledgement or a resolution that cannot be made (e.g. the corruption is still
    there); ``str()`` says why."""
