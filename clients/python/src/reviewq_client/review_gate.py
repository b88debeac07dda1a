"""``require_review``: a tool function runs only once reviewq released the call, with the released
(possibly reviewer-edited) arguments. HumanLayer's ``require_approval`` is the model.

Each call of the decorated function is sent as the agent's ``proposed_action``: reviewq's
validators and risk policies decide on it, and a held call waits for a reviewer. Released: the
function runs with the arguments reviewq released. Denied: ``Denied`` is raised (or, with
``on_deny="return"``, a sentence for the LLM is returned). Expired, failed or withdrawn:
``NotReleased``. Nobody decided within ``timeout_s``: the request is withdrawn and
``ReviewTimeout`` raised, so no reviewer approves a call that nobody will run.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, cast

from reviewq_client.errors import AlreadyFinal, Denied, NotReleased, ReviewTimeout
from reviewq_client.outcome import Outcome
from reviewq_client.tool_schema import function_tool, new_call_id, propose_tool_call

if TYPE_CHECKING:
    from reviewq_client.client import AsyncReviewqClient, ReviewqClient

OnDeny = Literal["raise", "return"]
# What the decorator sends as the conversation: a list of OpenAI messages, or a function of the
# tool's name and arguments that returns one.
MessagesArg = list[dict[str, Any]] | Callable[[str, dict[str, Any]], list[dict[str, Any]]] | None


def default_messages(name: str, description: str, arguments: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation sent when the caller gives none: the call itself, in words.

    reviewq's grounding check then finds the call's own values in it. Pass ``messages=`` (the
    agent's real conversation) to have identifiers and amounts checked against what the user said.
    """
    text = f"The agent asks to call {name} with {json.dumps(arguments, default=str)}."
    return [{"role": "user", "content": f"{description}\n\n{text}" if description else text}]


class _Gate:
    """What one decorated function needs to submit its calls and read the outcome."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        tool: dict[str, Any] | None,
        name: str | None,
        description: str | None,
        on_deny: OnDeny,
        timeout_s: float | None,
        messages: MessagesArg,
        metadata: dict[str, Any] | None,
    ) -> None:
        if on_deny not in ("raise", "return"):
            raise ValueError('on_deny must be "raise" or "return"')
        self.fn = fn
        self.tool = tool or function_tool(fn, name=name, description=description)
        self.name = str(self.tool["function"]["name"])
        self.on_deny = on_deny
        self.timeout_s = timeout_s
        self.messages = messages
        self.metadata = {
            "via": "reviewq_client.require_review",
            "function": fn.__qualname__,
            **(metadata or {}),
        }
        self.signature = inspect.signature(fn)

    def arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by name, as given (defaults are the function's business)."""
        bound = self.signature.bind(*args, **kwargs)
        arguments: dict[str, Any] = {}
        for key, value in bound.arguments.items():
            kind = self.signature.parameters[key].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(value)
            elif kind is not inspect.Parameter.VAR_POSITIONAL:
                arguments[key] = value
        return arguments

    def submission(self, arguments: dict[str, Any]) -> dict[str, Any]:
        description = str(self.tool["function"].get("description") or "")
        if callable(self.messages):
            messages = self.messages(self.name, arguments)
        else:
            messages = self.messages or default_messages(self.name, description, arguments)
        return {
            "messages": messages,
            "tools": [self.tool],
            "proposed_action": propose_tool_call(self.name, arguments, call_id=new_call_id()),
            "metadata": self.metadata,
        }

    def first_wait_ms(self, max_wait_ms: int) -> int:
        if self.timeout_s is None:
            return max_wait_ms
        return max(0, min(max_wait_ms, int(self.timeout_s * 1000)))

    def released_arguments(self, outcome: Outcome) -> dict[str, Any] | str:
        """The arguments to run with, or (``on_deny="return"``) the sentence to return instead."""
        if outcome.released:
            for call in outcome.tool_calls:
                if call.name == self.name:
                    return call.arguments
            raise NotReleased(
                f"reviewq released an action that does not call {self.name}",
                outcome=outcome,
                code="other_action",
            )
        if outcome.denied:
            message = f"{self.name} was denied: {outcome.reason or 'no reason given'}"
            if self.on_deny == "return":
                return message
            raise Denied(message, outcome=outcome, code="denied")
        message = f"{self.name} was not run: the request is {outcome.status}"
        if outcome.reason:
            message += f" ({outcome.reason})"
        if self.on_deny == "return":
            return message
        raise NotReleased(message, outcome=outcome, code=outcome.status)

    def timed_out(self, outcome: Outcome) -> ReviewTimeout:
        return ReviewTimeout(
            f"nobody decided on {self.name} within {self.timeout_s} s; request {outcome.id} was withdrawn",
            outcome=outcome,
            code="timeout",
        )


def _remaining(started: float, timeout_s: float | None) -> float | None:
    return None if timeout_s is None else max(0.0, timeout_s - (time.monotonic() - started))


def _decide_sync(client: ReviewqClient, gate: _Gate, arguments: dict[str, Any]) -> Outcome:
    started = time.monotonic()
    outcome = client.submit(**gate.submission(arguments), wait_ms=gate.first_wait_ms(client.max_wait_ms))
    if outcome.pending:
        outcome = client.wait(outcome.id, timeout_s=_remaining(started, gate.timeout_s))
    if outcome.pending:
        try:
            outcome = client.cancel(outcome.id, reason=f"the agent waited {gate.timeout_s} s for a decision")
        except AlreadyFinal:
            return client.get(outcome.id)  # decided in the meantime: that decision stands
        raise gate.timed_out(outcome)
    return outcome


async def _decide_async(client: AsyncReviewqClient, gate: _Gate, arguments: dict[str, Any]) -> Outcome:
    started = time.monotonic()
    outcome = await client.submit(
        **gate.submission(arguments), wait_ms=gate.first_wait_ms(client.max_wait_ms)
    )
    if outcome.pending:
        outcome = await client.wait(outcome.id, timeout_s=_remaining(started, gate.timeout_s))
    if outcome.pending:
        try:
            outcome = await client.cancel(
                outcome.id, reason=f"the agent waited {gate.timeout_s} s for a decision"
            )
        except AlreadyFinal:
            return await client.get(outcome.id)
        raise gate.timed_out(outcome)
    return outcome


def require_review(
    client: ReviewqClient | AsyncReviewqClient,
    fn: Callable[..., Any] | None = None,
    *,
    tool: dict[str, Any] | None = None,
    name: str | None = None,
    description: str | None = None,
    on_deny: OnDeny = "raise",
    timeout_s: float | None = 300.0,
    messages: MessagesArg = None,
    metadata: dict[str, Any] | None = None,
) -> Any:
    """Gate a tool function behind reviewq: ``@require_review(client)`` or
    ``@require_review(client, description="...", on_deny="return")``.

    ``tool`` is the OpenAI function tool to send (by default built from ``fn``'s signature, type
    hints and docstring; ``name`` and ``description`` override those parts). The decorated
    function keeps ``fn``'s signature and has ``.tool``. ``async def`` functions work with either
    client (a synchronous client's calls then run in a thread); a plain function needs the
    synchronous client.
    """
    from reviewq_client.client import AsyncReviewqClient

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        gate = _Gate(
            fn,
            tool=tool,
            name=name,
            description=description,
            on_deny=on_deny,
            timeout_s=timeout_s,
            messages=messages,
            metadata=metadata,
        )
        wrapper: Callable[..., Any]
        if inspect.iscoroutinefunction(fn):

            async def run_async(*args: Any, **kwargs: Any) -> Any:
                arguments = gate.arguments(args, kwargs)
                if isinstance(client, AsyncReviewqClient):
                    outcome = await _decide_async(client, gate, arguments)
                else:
                    outcome = await asyncio.to_thread(_decide_sync, client, gate, arguments)
                released = gate.released_arguments(outcome)
                if isinstance(released, str):
                    return released
                result: Awaitable[Any] = fn(**released)
                return await result

            wrapper = run_async
        else:
            if isinstance(client, AsyncReviewqClient):
                raise TypeError(f"{fn.__qualname__} is not async: gate it with ReviewqClient")
            sync_client = client

            def run(*args: Any, **kwargs: Any) -> Any:
                outcome = _decide_sync(sync_client, gate, gate.arguments(args, kwargs))
                released = gate.released_arguments(outcome)
                return released if isinstance(released, str) else fn(**released)

            wrapper = run
        functools.update_wrapper(wrapper, fn)
        cast(Any, wrapper).tool = gate.tool
        return wrapper

    return decorate(fn) if fn is not None else decorate
