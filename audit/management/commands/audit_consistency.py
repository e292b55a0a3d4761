"""Check the invariants across contexts now. Exit code 0 when clean, 1 when not.

Incremental by default (what changed since the last run); ``--full`` checks everything.
``--json`` prints the report for machines:
``{"clean": bool, "counts": {kind: n}, "violations": [{"kind", "key", "objects", "detail"}], ...}``.
"""

import json

from django.core.management.base import BaseCommand

from audit.services import audit_run


class Command(BaseCommand):
    help = "Check the invariants across orders, payments, inventory, shipping, sagas and the outbox."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--full", action="store_true", help="check every order, not only what changed")
        parser.add_argument("--json", action="store_true", dest="as_json", help="print the report as JSON")

    def handle(self, *args, full: bool, as_json: bool, **options) -> None:
        report = audit_run(full=full, wait=True)
        if as_json:
            self.stdout.write(json.dumps(report.as_dict(), indent=2, default=str))
        else:
            scope = "full sweep" if report.full else "incremental run"
            self.stdout.write(
                f"{scope}: {report.checked_orders} order(s) checked in {report.duration_seconds:.2f} s; "
                f"{len(report.findings)} violation(s), {report.opened} new, {report.resolved} resolved"
            )
            for kind, count in report.counts.items():
                self.stdout.write(f"  {kind}: {count}")
            for finding in report.findings:
                self.stdout.write(f"{finding.kind} {finding.key}: {finding.detail}")
            if report.clean:
                self.stdout.write(self.style.SUCCESS("clean"))
        if not report.clean:
            raise SystemExit(1)
