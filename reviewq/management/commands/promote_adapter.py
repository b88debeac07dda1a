"""``manage.py promote_adapter NAME [--override REASON]`` and ``--rollback BASE``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from reviewq.errors import ApplicationError
from reviewq.services import learning
from router.models import Adapter


class Command(BaseCommand):
    help = "Serve a replayed adapter over its base (refused when worse on a cluster), or roll back."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="the adapter to promote")
        parser.add_argument("--override", default="", help="promote although replay found it worse: why")
        parser.add_argument("--rollback", metavar="BASE", help="stop serving BASE's promoted adapter")
        parser.add_argument("--actor", default="ops (manage.py)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["rollback"]:
                adapter = learning.rollback(options["rollback"], actor=options["actor"])
                self.stdout.write(f"{adapter.base.name} serves no adapter now ({adapter.name} retired)")
                return
            candidate = Adapter.objects.filter(name=options["name"] or "").first()
            if candidate is None:
                raise CommandError(f"no adapter {options['name']!r}")
            adapter = learning.promote(candidate, actor=options["actor"], override_reason=options["override"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            f"{adapter.base.name} now serves {adapter.name} "
            f"(uncertainty threshold {adapter.calibrated_threshold})"
        )
