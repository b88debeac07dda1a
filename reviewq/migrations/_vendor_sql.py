"""For migrations that run raw SQL written per database vendor (triggers, functions).

Django does not load modules of a migrations package whose name starts with an underscore.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def run_by_vendor(statements_by_vendor: dict[str, list[str]]) -> Callable[[Any, Any], None]:
    """A RunPython function that executes the statements for the migrating database's vendor."""

    def run(apps: Any, schema_editor: Any) -> None:
        for statement in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement, params=None)

    return run
