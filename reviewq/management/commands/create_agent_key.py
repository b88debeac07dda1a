from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from reviewq.models import AgentKey
from reviewq.services.agent_keys import agent_key_create


class Command(BaseCommand):
    help = "Create an agent API key and print it once (only its hash is stored)."

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("name")
        ownership = parser.add_mutually_exclusive_group()
        ownership.add_argument(
            "--owner",
            help="Username of the person who raises requests with this key: they may never decide on them.",
        )
        ownership.add_argument(
            "--no-owner",
            action="store_true",
            help="Nobody is behind this key (a service account); say so explicitly, since then no "
            "reviewer is kept from deciding on its requests.",
        )
        parser.add_argument(
            "--scope",
            choices=[choice.value for choice in AgentKey.Scope],
            default=AgentKey.Scope.AGENT,
            help="agent: submit requests; ops: export traces and read across agents.",
        )

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        if options["scope"] == AgentKey.Scope.AGENT and not options["owner"] and not options["no_owner"]:
            # Separation of duties needs to know who is behind a key: never leave it to chance.
            raise CommandError(
                "say who raises requests with this key, so that they never decide on them: "
                "--owner USERNAME (or --no-owner for a key nobody is behind)"
            )
        owner = None
        if options["owner"]:
            owner = get_user_model().objects.filter(username=options["owner"]).first()
            if owner is None:
                raise CommandError(f"no user named {options['owner']!r}")
        _, raw_key = agent_key_create(name=options["name"], owner=owner, scope=options["scope"])
        self.stdout.write(raw_key)
