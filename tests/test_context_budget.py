"""The context budget: a long conversation is cut to a small model's context, not sent up the ladder."""

from __future__ import annotations

from typing import Any

from router.context_budget import ELISION_BLOCK, conversation_floor, fit_conversation, message_tokens
from router.contracts import TaskType
from router.models import ModelSpec
from router.prompts import TaskSpec, build_prompt, estimate_tokens, floor_tokens
from router.routing import rungs

POLICY = {"role": "system", "content": "Retail policy. " * 50}
FIRST = {"role": "user", "content": "I want to return order #W0001 for user anna_kim_1234."}


def long_conversation(rounds: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [POLICY, FIRST]
    for index in range(rounds):
        messages += [
            {"role": "assistant", "content": f"Let me look that up ({index}). " * 10},
            {"role": "tool", "tool_call_id": f"c{index}", "content": f'{{"order_id": "#W{index:04d}"}}'},
            {"role": "user", "content": f"Thanks, and what about the next one? ({index}) " * 5},
        ]
    messages.append({"role": "user", "content": "Please return #W0042 now."})
    return messages


def total(messages: list[dict[str, Any]]) -> int:
    return sum(message_tokens(message) for message in messages)


def test_a_conversation_that_fits_is_left_as_it_is() -> None:
    messages = long_conversation(3)
    assert fit_conversation(messages, total(messages)) is messages


def test_a_long_conversation_keeps_policy_first_task_recent_turn_and_tool_results() -> None:
    messages = long_conversation(40)
    budget = total(messages) // 3
    fitted = fit_conversation(messages, budget)
    assert total(fitted) <= budget
    assert fitted[:2] == [POLICY, FIRST]
    assert fitted[2]["role"] == "system" and "omitted" in fitted[2]["content"]
    assert "tool results among them kept" in fitted[2]["content"]
    assert fitted[-1] == messages[-1]
    # Every tool result survives: the arguments could be copied from any of them.
    assert [m for m in fitted if m["role"] == "tool"] == [m for m in messages if m["role"] == "tool"]


def test_when_tool_results_do_not_fit_either_they_are_elided_too() -> None:
    messages = long_conversation(40)
    floor = conversation_floor(messages)
    fitted = fit_conversation(messages, floor + 200)
    assert total(fitted) <= floor + 200
    assert "kept" not in fitted[2]["content"]
    assert fitted[-1] == messages[-1]


def test_the_cut_moves_in_blocks_so_consecutive_turns_share_it() -> None:
    """The next turn (two more messages) keeps the same elided head, so its saved state is reused."""
    messages = long_conversation(40)
    budget = total(messages) // 2
    turn = fit_conversation(messages, budget)
    reply = [{"role": "assistant", "content": "Done."}, {"role": "user", "content": "One more thing."}]
    next_turn = fit_conversation([*messages, *reply], budget)
    assert len(reply) < ELISION_BLOCK and next_turn == [*turn, *reply]


def test_the_prompt_for_a_small_context_is_cut_and_routing_counts_on_it() -> None:
    task = TaskSpec(task_type=TaskType.TOOL_USE, messages=long_conversation(60), tools=[])
    full = build_prompt(task)
    small = ModelSpec(
        name="small",
        tier="slm",
        backend="fake",
        strengths=[TaskType.TOOL_USE],
        context_size=estimate_tokens(full) // 2,
        price_input_per_mtok=0.1,
        price_output_per_mtok=0.1,
    )
    cut = build_prompt(task, context_tokens=small.context_size)
    assert estimate_tokens(cut) <= small.context_size < estimate_tokens(full)
    assert cut.conversation[-1] == task.messages[-1]
    routes = rungs(
        TaskType.TOOL_USE,
        prompt_tokens=estimate_tokens(full),
        models=[small],
        floor_tokens=floor_tokens(task, full),
    )
    assert [route.model.name for route in routes] == ["small"]
