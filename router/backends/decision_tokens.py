"""Which tokens of an answer carried a decision, and their log-probabilities.

The decisions in a compact JSON answer are its values: the tool name and the argument values.
Keys, quotes, braces and separators are forced by the grammar and would only dilute the
uncertainty estimate (router/uncertainty.py). Shared by the local backend, which knows each
token's byte span, and by HTTP backends, which get the server's tokens as text.
"""

from __future__ import annotations

import re
from typing import Any

# Scalars of compact JSON: strings (possibly cut off by max_tokens), numbers, literals.
_JSON_SCALAR = re.compile(r'"(?:[^"\\]|\\.)*"?|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null')


def decision_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the values in a compact JSON answer: the tool name and argument values.

    Keys, quotes, braces and separators carry no choice. A string's span is its content; an empty
    string's span is its closing quote (choosing to end the string is the decision then).
    """
    spans = []
    for match in _JSON_SCALAR.finditer(text):
        start, end = match.span()
        following = text[end : end + 1]
        if following == ":":  # a key
            continue
        if match.group().startswith('"'):
            closed = end - start >= 2 and text[end - 1] == '"'
            inner_end = end - 1 if closed else end
            spans.append((start + 1, inner_end) if inner_end > start + 1 else (start + 1, end))
        else:
            spans.append((start, end))
    return spans


def chosen_token_logprobs(text: str, spans: list[tuple[int, int, float | None]]) -> list[float]:
    """Log-probabilities of the chosen tokens that overlap a decision span (see decision_spans),
    leaving out those the grammar forced."""
    byte_spans = []
    for start, end in decision_spans(text):
        byte_start = len(text[:start].encode("utf-8", errors="replace"))
        byte_spans.append((byte_start, byte_start + len(text[start:end].encode("utf-8", errors="replace"))))
    return [
        logprob
        for token_start, token_end, logprob in spans
        if logprob is not None and any(token_start < end and start < token_end for start, end in byte_spans)
    ]


def server_token_logprobs(text: str, entries: list[Any]) -> list[float]:
    """Log-probabilities of the tokens that carried a choice (the tool name and argument values).

    Keys and punctuation are forced by the grammar and would only dilute the uncertainty
    estimate, as in the llama.cpp backend. When the server's tokens do not spell out the text
    (byte-level tokens of multi-byte characters, say), every token's figure is kept instead.
    """
    tokens = [
        (str(entry.get("token", "")), float(entry["logprob"]))
        for entry in entries
        if isinstance(entry, dict) and isinstance(entry.get("logprob"), int | float)
    ]
    if "".join(token for token, _ in tokens) != text:
        return [logprob for _, logprob in tokens]
    spans = decision_spans(text)
    chosen = []
    offset = 0
    for token, logprob in tokens:
        start, offset = offset, offset + len(token)
        if any(start < span_end and span_start < offset for span_start, span_end in spans):
            chosen.append(logprob)
    return chosen
