"""PII in exported traces replaced with placeholders, consistently within one export."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import Any

from router.json_tree import map_leaves
from router.pii import find_pii_in_text, iter_strings

# Every detector in router/pii.py needs an "@" or a digit: text without either skips its regexes.
_MAYBE_PII = re.compile(r"[@\d]")


class Redactor:
    """Replaces detected PII with placeholders such as ``<EMAIL_1>`` or ``<PHONE_2>``.

    One value gets one placeholder for the life of the instance (one export), wherever it
    appears: in the conversation and in the action alike, so a model trained on the output still
    learns to copy ``<EMAIL_1>`` from the context into the arguments. Emails are compared without
    case, other kinds on their letters and digits only ("+1 415-555-0100" is "+14155550100").
    """

    def __init__(self) -> None:
        # Keys are short digests: the map grows with distinct PII values (not with traces), and
        # stays small and free of raw PII on big exports.
        self._seen: dict[bytes, str] = {}
        self.counts: Counter[str] = Counter()

    def placeholder(self, kind: str, value: str) -> str:
        normal = value.lower() if kind == "email" else re.sub(r"[^0-9A-Za-z]", "", value).upper()
        key = hashlib.blake2b(f"{kind}\0{normal}".encode(), digest_size=12).digest()
        found = self._seen.get(key)
        if found is None:
            self.counts[kind] += 1
            found = self._seen[key] = f"<{kind.upper()}_{self.counts[kind]}>"
        return found

    def value(self, value: Any) -> Any:
        """A copy of a JSON value with PII replaced in every string (keys are left alone).

        The value's strings are scanned together (joined by NUL, which no detector matches
        across), and every value found is replaced wherever it occurs in them: a phone number
        found in the conversation is replaced in the arguments too, even where the detector
        alone would miss it there. Numbers are checked as text, as ``iter_strings`` does: a card
        number stored as an integer becomes a placeholder string.
        """
        joined = "\0".join(text for _, text in iter_strings(value))
        if not _MAYBE_PII.search(joined):
            return value
        findings = find_pii_in_text(joined)
        if not findings:
            return value
        replacements = [
            (finding.value, self.placeholder(finding.kind, finding.value)) for finding in findings
        ]
        # Longest first, so that a value inside a longer one does not break the longer one.
        replacements.sort(key=lambda pair: len(pair[0]), reverse=True)
        return _replace(value, replacements)


def _replace(value: Any, replacements: list[tuple[str, str]]) -> Any:
    def replaced(leaf: str | int | float) -> Any:
        text = str(leaf)
        for old, new in replacements:
            if old in text:
                text = text.replace(old, new)
        # A number stays a number unless part of it was PII (a card number stored as an integer).
        return leaf if text == str(leaf) else text

    return map_leaves(value, replaced)
