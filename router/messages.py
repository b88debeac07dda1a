"""Reading OpenAI-format chat messages: one place for what every backend and validator needs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# A cheap, deliberately high guess of tokens per character for sizing prompts before they are
# tokenized (routing by context size) and for servers that report no usage.
CHARS_PER_TOKEN = 3.5


def approx_tokens(text: str) -> int:
    """About how many tokens ``text`` is (see CHARS_PER_TOKEN)."""
    return int(len(text) / CHARS_PER_TOKEN)


def content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return "" if content is None else str(content)


def call_arguments(raw: Any) -> Any:
    """A tool call's arguments (OpenAI sends a JSON string) as a value; unparsable text as is."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw if raw is not None else {}


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class CallTurn:
    """A tool call an assistant message made: its id, tool name and decoded arguments."""

    id: str
    name: str
    arguments: Any


@dataclass(frozen=True)
class ChatTurn:
    """One message of an agent's conversation, read the way every backend needs it.

    ``role`` is ``system`` (system and developer messages), ``user``, ``assistant`` or ``tool``.
    A tool result carries the id of the call it answers and that call's tool name.
    """

    role: str
    text: str
    calls: tuple[CallTurn, ...] = ()
    call_id: str = ""
    tool_name: str = ""

    @property
    def text_role(self) -> str:
        """The role for a model without a tool role: a tool result reads as a user turn."""
        return "user" if self.role == "tool" else self.role

    def as_text(self) -> str:
        """The turn as plain text: tool calls as JSON lines after any text, a tool result
        labelled with its tool's name (small models were rarely trained on a tool role, and
        chat templates differ in what they accept)."""
        if self.role == "assistant":
            calls = [compact_json({"name": call.name, "arguments": call.arguments}) for call in self.calls]
            return "\n".join(filter(None, [self.text, *calls]))
        if self.role == "tool":
            return f"Tool result ({self.tool_name}):\n{self.text}"
        return self.text


def chat_turns(conversation: list[dict[str, Any]]) -> list[ChatTurn]:
    """The conversation as ChatTurns, each tool result matched to the name of the call it answers."""
    names: dict[str, str] = {}
    turns = []
    for message in conversation:
        role = message.get("role", "user")
        text = content_text(message.get("content"))
        if role in ("system", "developer"):
            turns.append(ChatTurn("system", text))
        elif role == "assistant":
            calls = []
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                turn = CallTurn(
                    id=str(call.get("id") or ""),
                    name=str(function.get("name") or ""),
                    arguments=call_arguments(function.get("arguments")),
                )
                names[turn.id] = turn.name
                calls.append(turn)
            turns.append(ChatTurn("assistant", text, calls=tuple(calls)))
        elif role == "tool":
            call_id = str(message.get("tool_call_id") or "")
            name = names.get(call_id) or str(message.get("name") or "tool")
            turns.append(ChatTurn("tool", text, call_id=call_id, tool_name=name))
        else:
            turns.append(ChatTurn("user", text))
    return turns
