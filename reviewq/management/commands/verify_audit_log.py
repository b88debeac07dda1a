from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from reviewq import audit
from reviewq.models import AuditEvent


class Command(BaseCommand):
    help = "Check the audit log's hash chain; fails if any event was altered or removed."

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        problems = list(audit.verify())
        for problem in problems:
            self.stderr.write(problem)
        if problems:
            raise CommandError(f"the audit log does not verify: {len(problems)} problem(s)")
        self.stdout.write(f"the audit log verifies: {AuditEvent.objects.count()} events")
