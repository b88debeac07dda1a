"""Drafts for llama.cpp decoding: where the text the model is likely to write next comes from.

A draft is only a guess that the model confirms token by token, so these helpers decide speed,
never the answer. The real-model test checks both: fewer model evaluations, a valid answer.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from router.backends.base import Prompt
from router.backends.llama_cpp import LlamaCppBackend
from router.backends.llama_grammar import copied_value_rest, open_string_value
from router.model_files import SMOLLM2_PATH, resolve_model_path
from router.prompts import TaskSpec, build_prompt
from tests.factories import tools


@pytest.mark.parametrize(
    ("text", "typed"),
    [
        ('{"name":"get_or', "get_or"),
        ('{"name":"get_order_details","arguments":{"order_id":"W23', "W23"),
        ('{"name":"x","arguments":{"order_id":"', ""),
        ('{"name":"x","arguments":{"order_', None),  # a key, not a value
        ('{"name":"x","arguments":{"ids":["a","b', "b"),  # array items are values
        ('{"name":"x","arguments":{"a":"b"', None),  # closed
        ('{"name":"x","arguments":{"a":"say \\"hi', None),  # an escape: never copied
        ('{"name":"x","arguments":{"n":12', None),
    ],
)
def testopen_string_value(text: str, typed: str | None) -> None:
    assert open_string_value(text) == typed


def test_copied_value_rest_finds_the_value_in_the_conversation() -> None:
    source = "\nuser\nWhere is order #W2378156? My email is ana.lopez@example.com.\n"
    assert copied_value_rest("W23", source) == ("78156", True)
    assert copied_value_rest("ana", source) == (".lopez@example.com", True)
    # Several places that disagree give their common part only, and say so.
    assert copied_value_rest("W2", "orders W2378156 and W2399000") == ("3", False)
    # A value not in the conversation gives nothing to copy.
    assert copied_value_rest("Q9", source) == ("", False)


@pytest.mark.real_model
def test_drafts_cut_model_evaluations_and_keep_answers_valid() -> None:
    backend = LlamaCppBackend(resolve_model_path(SMOLLM2_PATH), n_ctx=4096)
    retail = tools("get_order_details", "get_user_details", "find_user_id_by_email")

    def prompt(number: int) -> Prompt:
        message = f"Get order details for order_id=#W{number}"
        return build_prompt(TaskSpec("tool_use", [{"role": "user", "content": message}], retail))

    def propose(number: int, extended: bool) -> tuple[dict[str, Any], int]:
        backend.extended_drafts = extended
        generation = backend.generate(prompt(number))
        return json.loads(generation.text), backend.last_stats["decode_batches"]

    propose(2378150, True)  # evaluates the tool prefix and leaves one answer to recall
    plain, plain_batches = propose(2378161, False)
    drafted, drafted_batches = propose(2378172, True)
    assert drafted["name"] == plain["name"]
    assert drafted_batches < plain_batches
    assert plain_batches >= 5  # without drafts most tokens are evaluated one at a time


def test_values_are_copied_only_from_what_the_agent_sent() -> None:
    """The retry feedback is reviewq's text: a draft must never copy an argument value from it."""
    from router.backends.base import Prompt
    from router.backends.llama_cpp import _copy_source

    prompt = Prompt(
        system="instructions",
        conversation=[{"role": "user", "content": "Order #W2378156, please."}],
        output_schema={},
        feedback="copy this value exactly from the conversation; yours does not appear there",
    )
    source = _copy_source(prompt)
    assert "#W2378156" in source
    assert "copy this value" not in source and "instructions" not in source
