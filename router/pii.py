"""Detectors for personal data: emails, phone numbers, card numbers (Luhn), national IDs, IBANs,
and street addresses written the English way (a house number, a street name, a street type).

Regular expressions, not a language model: they find what has a recognisable shape. Names of
people and places ("Jane Doe", "Springfield") have none, and are not found (the README says so
where it describes redaction).

Findings are facts about an action, not errors: risk policies match on them, reviewers see them,
and redaction (for traces and external models) replaces them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from router.json_tree import leaves

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# 13-19 digits, optionally grouped by spaces or dashes.
CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
US_SSN = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")
UK_NINO = re.compile(r"\b[A-CEGHJ-PR-TW-Z]{2}\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-D]\b")
# "98 Elm Street", "1200 N. Lake Shore Dr", "7 rue ..." is not covered (English street types only).
STREET_ADDRESS = re.compile(
    r"\b\d{1,6}[A-Za-z]?\s+(?:[NSEW]\.?\s+)?(?:[A-Z][\w'-]*\.?\s+){1,4}"
    r"(?i:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|"
    r"Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq)\b\.?"
    r"(?:,?\s+(?i:Apt|Apartment|Suite|Ste|Unit|#)\.?\s*\w+)?"
)
# Not part of a longer run of digit groups (a card or account number is not a phone number).
PHONE = re.compile(
    r"(?<![\w#])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?"
    r"\d{2,4}[ .-]\d{3,4}[ .-]?\d{0,4}(?!\w)(?![ .-]\d)"
)


@dataclass(frozen=True)
class PIIFinding:
    kind: str
    path: str
    value: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def luhn_valid(number: str) -> bool:
    digits = [int(d) for d in number if d.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    compact = candidate.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(numeric) % 97 == 1


def find_pii_in_text(text: str, path: str = "$") -> list[PIIFinding]:
    findings: list[PIIFinding] = []
    taken: list[tuple[int, int]] = []

    def add(kind: str, match: re.Match[str]) -> None:
        span = match.span()
        if any(start < span[1] and span[0] < end for start, end in taken):
            return
        taken.append(span)
        findings.append(PIIFinding(kind, path, match.group(0)))

    for match in EMAIL.finditer(text):
        add("email", match)
    for match in IBAN.finditer(text):
        if iban_valid(match.group(0)):
            add("iban", match)
    for match in CARD.finditer(text):
        if luhn_valid(match.group(0)):
            add("card_number", match)
    for match in US_SSN.finditer(text):
        add("national_id", match)
    for match in UK_NINO.finditer(text):
        add("national_id", match)
    for match in STREET_ADDRESS.finditer(text):
        add("street_address", match)
    for match in PHONE.finditer(text):
        if 9 <= sum(ch.isdigit() for ch in match.group(0)) <= 15:
            add("phone", match)
    return findings


def iter_strings(value: Any, path: str = "$") -> Iterator[tuple[str, str]]:
    """Every string (and number, as text) inside a JSON value, with its JSON path."""
    for where, leaf in leaves(value, path):
        yield where, leaf if isinstance(leaf, str) else str(leaf)


def find_pii(value: Any, path: str = "$") -> list[PIIFinding]:
    """PII anywhere inside a JSON value."""
    return [finding for where, text in iter_strings(value, path) for finding in find_pii_in_text(text, where)]
