"""The llama.cpp grammar for an output schema, and the text that schema leaves no choice about.

``Grammar`` wraps a compiled llama.cpp grammar sampler: which tokens may come next, the
grammar-allowed argmax, and the drafts the backend evaluates in one batch (the text the schema
forces, how earlier answers to the same schema went on, and the rest of a value being copied
from the conversation). The scanners below read compact JSON as it is being written.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import math
import re
from collections import deque
from typing import Any

import numpy as np

from router.backends.base import BackendError

SHORTLIST = 64  # top tokens checked against the grammar before masking the whole vocabulary
ANSWER_MEMORY = 4  # recent answers per output schema, kept as drafts for the next ones

# The grammar converter lets a single optional space around JSON punctuation; every space the
# model emits is a decoded token, so the grammar admits compact JSON only.
_SPACE_RULE = re.compile(r"^space ::= .*$", re.MULTILINE)


class Grammar:
    """A compiled llama.cpp grammar sampler for one output schema, plus the text it forces.

    Compiled once per schema and reset per call (the sampler keeps the parse state).
    """

    def __init__(self, lib: Any, vocab: Any, schema: dict[str, Any]) -> None:
        from llama_cpp.llama_grammar import json_schema_to_gbnf  # type: ignore[import-untyped]

        self._lib = lib
        self._pristine = self._sampler = None
        try:
            gbnf = json_schema_to_gbnf(json.dumps(schema))
        except Exception as exc:  # the converter raises assorted errors on unsupported features
            raise BackendError(f"cannot build a grammar from the output schema: {exc}") from exc
        self.gbnf = _SPACE_RULE.sub('space ::= ""', gbnf)
        self._pristine = lib.llama_sampler_init_grammar(vocab, self.gbnf.encode("utf-8"), b"root")
        if not self._pristine:
            raise BackendError("llama.cpp rejected the grammar built from the output schema")
        self._plans = _tool_plans(schema)
        self._answers: deque[tuple[int, ...]] = deque(maxlen=ANSWER_MEMORY)

    def remember(self, tokens: list[int]) -> None:
        """Keep a finished answer's tokens as a draft for the next answers to this schema."""
        self._answers.append(tuple(tokens))

    def recalled_closing(self, text: str, typed: str, piece: Any) -> list[int]:
        """How a remembered answer closed the string value ``text`` ends inside (``typed`` of it
        so far), in its tokens.

        For an answer that reads like ``text`` up to this value's opening quote: its tokens from
        the one that starts with the value's closing quote (the model writes '"}' where a
        tokenizer says '"' '}}'), up to the next value's content.
        """
        head = text[: len(text) - len(typed)]  # up to and including the opening quote
        for answer in reversed(self._answers):
            offsets, answer_text = [], ""
            for token in answer:
                offsets.append(len(answer_text))
                answer_text += piece(token).decode("utf-8", errors="ignore")
            if not answer_text.startswith(head):
                continue
            end = _value_end(answer_text, len(head) - 1)
            if end is None or end - 1 not in offsets:
                continue
            return self._until_value(list(answer[offsets.index(end - 1) :]), piece, answer_text[: end - 1])
        return []

    def recalled(self, generated: list[int], piece: Any, out: bytearray) -> list[int]:
        """How the remembered answers that began like ``generated`` went on, as far as they agree.

        With one such answer, only up to the start of a string value's content: its values (an
        order id) are the request's own, unlike the structure around them.
        """
        n = len(generated)
        following = [
            answer[n:] for answer in self._answers if len(answer) > n and list(answer[:n]) == generated
        ]
        if not following:
            return []
        if len(following) > 1:
            return list(_shared_start(following))
        return self._until_value(list(following[0]), piece, out.decode("utf-8", errors="ignore"))

    @staticmethod
    def _until_value(tokens: list[int], piece: Any, text: str) -> list[int]:
        """``tokens`` written after ``text``, up to the first that types a string value's content."""
        for index, token in enumerate(tokens):
            text += piece(token).decode("utf-8", errors="ignore")
            if open_string_value(text):
                return tokens[:index]
        return tokens

    def reset(self) -> None:
        # A fresh clone of the untouched sampler: llama_sampler_reset re-parses the whole
        # grammar, a clone only copies it (several times cheaper for a 16-tool schema).
        if self._sampler:
            self._lib.llama_sampler_free(self._sampler)
        self._sampler = self._lib.llama_sampler_clone(self._pristine)

    def close(self) -> None:
        for sampler in (self._sampler, self._pristine):
            if sampler:
                self._lib.llama_sampler_free(sampler)
        self._pristine = self._sampler = None

    def __del__(self) -> None:
        self.close()

    def accept(self, token: int) -> None:
        self._lib.llama_sampler_accept(self._sampler, token)

    def allows(self, token: int, single: Any) -> bool:
        lib = self._lib
        single[0].id = token
        single[0].logit = 0.0
        single[0].p = 0.0
        array = lib.llama_token_data_array(data=single, size=1, selected=-1, sorted=False)
        lib.llama_sampler_apply(self._sampler, ctypes.byref(array))
        return bool(math.isfinite(single[0].logit))

    def best(self, logits: Any, buffer: Any, vocab_ids: Any) -> int:
        """Greedy choice among the tokens the grammar allows; -1 when it allows none."""
        # The allowed argmax is nearly always among the model's top tokens, and masking a
        # shortlist is far cheaper than masking the whole vocabulary; both give the same token.
        shortlist = np.argpartition(logits, -SHORTLIST)[-SHORTLIST:].astype(np.intc)
        for ids in (shortlist, vocab_ids):
            chosen = self._allowed_argmax(logits, ids, buffer[: len(ids)])
            if chosen >= 0:
                return chosen
        return -1

    def allowed_logits(self, logits: Any, ids: Any, view: Any) -> Any:
        """The logits of ``ids``, with the tokens the grammar forbids here set to -inf."""
        self._allowed_argmax(logits, ids, view)
        return view["logit"].copy()

    def _allowed_argmax(self, logits: Any, ids: Any, view: Any) -> int:
        lib = self._lib
        view["id"] = ids
        view["logit"] = logits[ids]
        view["p"] = 0.0
        array = lib.llama_token_data_array(
            data=view.ctypes.data_as(lib.llama_token_data_p), size=len(view), selected=-1, sorted=False
        )
        lib.llama_sampler_apply(self._sampler, ctypes.byref(array))
        index = int(np.argmax(view["logit"]))
        return int(view["id"][index]) if math.isfinite(float(view["logit"][index])) else -1

    def forced_text(self, text: str) -> str:
        """Text the schema leaves no choice about after ``text`` (tool-call schemas only).

        That is ``{"name":"``, the rest of a tool name once its prefix is unique, and the key
        skeleton of its arguments when all of them are required (the grammar then orders them
        as the schema lists them). It is only a draft: the model confirms every token of it.
        """
        if self._plans is None:
            return ""
        head = '{"name":"'
        if not text.startswith(head):
            return head[len(text) :] if head.startswith(text) else ""
        typed = text[len(head) :]
        quote = typed.find('"')
        if quote < 0:
            matches = [name for name in self._plans if name.startswith(typed)]
        else:
            matches = [typed[:quote]] if typed[:quote] in self._plans else []
        if len(matches) != 1:
            return ""  # the tool is still the model's choice
        name = matches[0]
        keys = self._plans[name]
        segments: list[str | None] = [f'{head}{name}","arguments":{{']
        if keys is not None:
            for index, key in enumerate(keys):
                segments += [("," if index else "") + json.dumps(key, ensure_ascii=False) + ":", None]
            segments.append("}}")
        return _forced_segment(segments, text)


# Where a value copied from the conversation most likely ends: a quote, whitespace, or
# punctuation that ends a sentence or clause.
_COPY_END = re.compile(r'["\\\s]|[.,;:!?)\]}](?=\s|$)')
_COPY_MAX_CHARS = 64  # argument strings are capped at 64 characters (router.schemas)


def copied_value_rest(typed: str, source: str) -> tuple[str, bool]:
    """Where ``typed`` appears in ``source``: the text that follows it there up to a natural end,
    and whether every such place agrees (several that disagree give only their common part)."""
    at_word_start: set[str] = set()
    anywhere: set[str] = set()
    start = source.find(typed)
    while start >= 0 and len(anywhere) < 16:
        following = source[start + len(typed) : start + len(typed) + _COPY_MAX_CHARS]
        end = _COPY_END.search(following)
        rest = following[: end.start()] if end else following
        anywhere.add(rest)
        if start == 0 or not source[start - 1].isalnum():
            at_word_start.add(rest)
        start = source.find(typed, start + 1)
    candidates = at_word_start or anywhere
    if not candidates:
        return "", False
    if len(candidates) == 1:
        return candidates.pop(), True
    return _shared_start(sorted(candidates)), False


def open_string_value(text: str) -> str | None:
    """What ``text`` (compact JSON being written) has typed of the string value it ends inside.

    None when it ends outside a string, inside an object key, or after an escape (copying
    would have to re-escape the source text).
    """
    stack: list[str] = []
    expecting_key = in_string = is_key = escaped = False
    start = 0
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string, start = True, index + 1
            is_key = expecting_key and bool(stack) and stack[-1] == "{"
        elif char in "{[":
            stack.append(char)
            expecting_key = char == "{"
        elif char in "}]":
            if stack:
                stack.pop()
            expecting_key = False
        elif char == ",":
            expecting_key = bool(stack) and stack[-1] == "{"
        elif char == ":":
            expecting_key = False
    if not in_string or is_key:
        return None
    typed = text[start:]
    return None if "\\" in typed else typed


def _forced_segment(segments: list[str | None], text: str) -> str:
    """The rest of the literal segment ``text`` stops inside (None segments are free values)."""
    position = 0
    for index, segment in enumerate(segments):
        if segment is None:
            end = _value_end(text, position)
            if end is None:
                return ""  # the model is still writing this value
            position = end
            continue
        typed = text[position : position + len(segment)]
        if typed == segment:
            position += len(segment)
            continue
        if len(typed) < len(segment) and segment.startswith(typed):
            # The rest of this literal and any literals right after it, up to the next free value.
            following = list(itertools.takewhile(lambda s: s is not None, segments[index + 1 :]))
            return segment[len(typed) :] + "".join(s for s in following if s is not None)
        return ""
    return ""


def _value_end(text: str, start: int) -> int | None:
    """Index just after the JSON value at ``start`` when it is provably finished, else None."""
    if start >= len(text):
        return None
    if text[start] not in '"[{':
        # A number or literal ends only where the next character shows it.
        return next((i for i in range(start, len(text)) if text[i] in ",}]"), None)
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                if depth == 0:
                    return index + 1
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return index + 1
    return None


def _tool_plans(schema: dict[str, Any]) -> dict[str, list[str] | None] | None:
    """For a router.schemas tool-call schema (or anyOf of them): tool name -> argument keys.

    The keys are forced only when every property is required and no other is allowed (None:
    force nothing past the arguments' opening brace). Other schemas get no forcing (None).
    """
    plans: dict[str, list[str] | None] = {}
    for alternative in schema.get("anyOf", [schema]):
        properties = alternative.get("properties") or {}
        name = properties.get("name") or {}
        if list(properties) != ["name", "arguments"] or not isinstance(name.get("const"), str):
            return None
        if properties["arguments"].get("type") != "object":
            return None
        arguments = properties["arguments"]
        keys = list(arguments.get("properties") or {})
        closed = arguments.get("additionalProperties") is False and "patternProperties" not in arguments
        plans[name["const"]] = keys if closed and set(arguments.get("required") or []) == set(keys) else None
    return plans or None


def _shared_start(sequences: list[Any]) -> Any:
    """The longest start that all ``sequences`` (strings or token tuples) share."""
    shortest = min(sequences, key=len)
    for index, token in enumerate(shortest):
        if any(sequence[index] != token for sequence in sequences):
            return shortest[:index]
    return shortest
