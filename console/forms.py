"""The operators' confirmation forms: every action needs a reason, for the audit log."""

from django import forms
from django.conf import settings

from console.audit import OPERATOR_TEXT_MAX

REASON_HELP = "Why you do this. It is written to the audit log with your name."


class OperatorActionForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), max_length=OPERATOR_TEXT_MAX, help_text=REASON_HELP
    )
    # The saga's step and phase when the page was loaded: if the saga moved on before the
    # operator confirmed, the action is refused rather than applied to a step nobody looked at.
    position = forms.CharField(widget=forms.HiddenInput, required=False)


class MarkStepDoneForm(OperatorActionForm):
    evidence = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        max_length=OPERATOR_TEXT_MAX,
        help_text="What was done by hand and where it can be checked, e.g. the refund id in the provider's console.",
    )


class BulkActionForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), max_length=OPERATOR_TEXT_MAX, help_text=REASON_HELP
    )


class BulkRepairForm(BulkActionForm):
    # The sagas after the canary go at most this fast: a provider that just came back is not
    # hit by the whole selection at once.
    rate_per_minute = forms.IntegerField(
        label="Sagas per minute",
        required=False,
        min_value=1,
        max_value=settings.CONSOLE_BULK_REPAIR_MAX_RATE_PER_MINUTE,
        initial=settings.CONSOLE_BULK_REPAIR_RATE_PER_MINUTE,
        help_text="After the canary has succeeded, the other sagas are sent no faster than this (empty: the default).",
    )


class DeadLetterReplayForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), max_length=OPERATOR_TEXT_MAX, help_text=REASON_HELP
    )
