"""The τ-bench retail workload's pieces the benches share (no Django: importable before setup)."""

from __future__ import annotations

import re


def first_person(instruction: str) -> str:
    """The task's instruction ("You are Yusuf Rossi in 19122. You received your order...") as the
    customer's own opening message."""
    for pattern, replacement in (
        (r"\bYou are\b", "I am"),
        (r"\byou are\b", "I am"),
        (r"\bYou're\b", "I'm"),
        (r"\byou're\b", "I'm"),
        (r"\bYou'd\b", "I'd"),
        (r"\byou'd\b", "I'd"),
        (r"\bYour\b", "My"),
        (r"\byour\b", "my"),
        (r"\bYou\b", "I"),
        (r"\byou\b", "me"),
    ):
        instruction = re.sub(pattern, replacement, instruction)
    return "Hi. " + instruction
