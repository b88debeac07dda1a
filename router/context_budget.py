"""A context budget: an agent's conversation cut to what a small model's context holds.

When a conversation outgrows a model's context, the model still needs the agent's policy (the
leading system messages), the task as the user first stated it, the recent turn (the last user
message and everything after it) and the tool results its arguments could be copied from. The
rest is elided, with a marker saying how much, in two steps: first the older messages other than
tool results, then, if that is not enough, the older tool results too. The cut moves in blocks of
messages, so the consecutive turns of one conversation keep the same cut for a while and a local
backend reuses its saved state of it. Grounding always checks the answer against the full
conversation (the request's messages), never this cut.
"""

from __future__ import annotations

import json
from typing import Any

from router.messages import approx_tokens

ELISION_BLOCK = 8  # messages: the cut moves by this many, so that it stays put across turns
ELIDED_MARKER = "[{count} earlier messages of this conversation were omitted to fit the context{kept}]"


def message_tokens(message: dict[str, Any]) -> int:
    """About how many tokens ``message`` costs in a prompt."""
    return approx_tokens(json.dumps(message, ensure_ascii=False))


def conversation_floor(messages: list[dict[str, Any]]) -> int:
    """About how many tokens of ``messages`` no cut can remove (policy, first task, recent turn)."""
    head, recent = _head_end(messages), _recent_start(messages)
    kept = messages[:head] + messages[max(head, recent) :]
    return sum(message_tokens(message) for message in kept) + _MARKER_TOKENS


def fit_conversation(messages: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """``messages`` as they are when they fit ``budget`` tokens, else cut as the module says (the
    result may still be over budget when the floor is: the backend then refuses it)."""
    sizes = [message_tokens(message) for message in messages]
    if sum(sizes) <= budget:
        return messages
    head, recent = _head_end(messages), _recent_start(messages)
    if recent <= head:
        return messages  # nothing between the first task and the recent turn to elide
    fixed = sum(sizes[:head]) + sum(sizes[recent:]) + _MARKER_TOKENS
    keep_tool_results = True
    cut = head
    while True:
        cut = min(cut + ELISION_BLOCK, recent)
        middle = range(cut, recent)
        kept_results = [
            i for i in range(head, cut) if keep_tool_results and messages[i].get("role") == "tool"
        ]
        if fixed + sum(sizes[i] for i in middle) + sum(sizes[i] for i in kept_results) <= budget:
            break
        if cut == recent:
            if not keep_tool_results:
                break  # down to the floor
            keep_tool_results, cut = False, head
    return [
        *messages[:head],
        _marker(cut - head - len(kept_results), tool_results_kept=bool(kept_results)),
        *(messages[i] for i in kept_results),
        *messages[cut:],
    ]


def _marker(count: int, *, tool_results_kept: bool) -> dict[str, Any]:
    """The message that stands where messages were elided."""
    kept = ", the tool results among them kept" if tool_results_kept else ""
    return {"role": "system", "content": ELIDED_MARKER.format(count=count, kept=kept)}


_MARKER_TOKENS = message_tokens(_marker(99999, tool_results_kept=True))


def _head_end(messages: list[dict[str, Any]]) -> int:
    """Where the messages after the leading system messages and the first user message begin."""
    index = 0
    while index < len(messages) and messages[index].get("role") == "system":
        index += 1
    if index < len(messages) and messages[index].get("role") == "user":
        index += 1
    return index


def _recent_start(messages: list[dict[str, Any]]) -> int:
    """Where the recent turn begins: the last user message (else the last message)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            return index
    return max(0, len(messages) - 1)
