"""Chat templates: how a small model reads a prompt with tools, as text.

A model is served with the template it was trained on, chosen from its GGUF architecture: Qwen2.5
reads tools in its own ``<tools>`` block and answers in ``<tool_call>`` tags; other models read
ChatML. Each renderer returns (system prefix, conversation, tail) so the backend can keep the KV
state of the prefix across conversations and of the conversation across its turns.
"""

from __future__ import annotations

import json

from router.backends.base import Prompt
from router.messages import ChatTurn, chat_turns

CHATML = "chatml"
QWEN_TOOLS = "qwen_tools"
# Qwen2.5's own chat template for tools (the GGUF's tokenizer.chat_template), word for word: the
# model was trained to read tools in this block and to answer in <tool_call> tags.
_QWEN_TOOLS_HEAD = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
# What the template puts around each call of an assistant turn.
CALL_OPEN = "\n<tool_call>\n"
CALL_CLOSE = "\n</tool_call>"
_QWEN_TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    'within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, '
    '"arguments": <args-json-object>}\n</tool_call>'
)


def chat_format_of(architecture: str) -> str:
    """How a model of this GGUF architecture reads a conversation with tools."""
    return QWEN_TOOLS if architecture == "qwen2" else CHATML


def render_prompt(prompt: Prompt, chat_format: str) -> tuple[str, str, str]:
    """The prompt as the model's chat template has it: (system prefix, conversation, tail).

    The prefix is stable for a tool set; the conversation is the agent's messages, which a later
    turn of the same conversation starts with; the tail is what this call adds after them (the
    retry feedback and the start of the answer)."""
    if chat_format == QWEN_TOOLS and prompt.tools:
        return render_qwen_tools(prompt)
    return render_chatml(prompt)


def render_qwen_tools(prompt: Prompt) -> tuple[str, str, str]:
    """Qwen2.5's tool template: the tools in the system turn, earlier calls in <tool_call> tags,
    results in <tool_response> tags of a user turn, and the answer begun with "<tool_call>\n" so
    that the grammar's JSON is the call inside it.

    Several calls (``parallel_tool_calls``) are the grammar's ``{"calls": [...]}`` plan, not
    repeated tags: after a call in its tags both Qwen models end the answer, and with one call
    per line they end it after the first, however many the user asked for; in the plan the 1.5B
    goes on to the next call where there is one and closes the list where there is not."""
    tools = "".join("\n" + json.dumps(tool, ensure_ascii=False, sort_keys=True) for tool in prompt.tools)
    leading, turns = _leading_system(prompt)
    # The agent's own system prompt (its policy) joins the system turn, as in Qwen's template: it
    # is stable across the agent's conversations, so its KV cache is reused with the tools'.
    system = "\n\n".join(filter(None, [prompt.instructions, *leading]))
    prefix = _turn("system", system + _QWEN_TOOLS_HEAD + tools + _QWEN_TOOLS_TAIL)
    parts: list[str] = []
    responses: list[str] = []  # consecutive tool results share one user turn
    for turn in turns:
        if turn.role == "tool":
            responses.append(f"\n<tool_response>\n{turn.text}\n</tool_response>")
            continue
        if responses:
            parts.append("<|im_start|>user" + "".join(responses) + "<|im_end|>\n")
            responses = []
        if turn.role == "assistant" and turn.calls:
            calls = "".join(
                CALL_OPEN
                + json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
                + CALL_CLOSE
                for call in turn.calls
            )
            parts.append(
                f"<|im_start|>assistant{chr(10) + turn.text if turn.text else ''}{calls}<|im_end|>\n"
            )
        else:
            parts.append(_turn(turn.role, turn.text))
    if responses:
        parts.append("<|im_start|>user" + "".join(responses) + "<|im_end|>\n")
    feedback = _turn("user", prompt.feedback) if prompt.feedback else ""
    # A plan, or an answer that may be a reply, is the grammar's JSON from its first character.
    begun = prompt.parallel_tool_calls or prompt.may_reply
    answer = "<|im_start|>assistant\n" + ("" if begun else CALL_OPEN.lstrip("\n"))
    return prefix, "".join(parts), feedback + answer


def render_chatml(prompt: Prompt) -> tuple[str, str, str]:
    """The prompt as ChatML: (system prefix, conversation, tail), as ``render_prompt``. The agent's
    leading system messages stay system turns, in the prefix (stable across its conversations)."""
    leading, turns = _leading_system(prompt)
    prefix = _turn("system", prompt.system) + "".join(_turn("system", text) for text in leading)
    # SmolLM2 was not trained on a tool role: a labelled user turn reads as a tool result.
    conversation = "".join(_turn(turn.text_role, turn.as_text()) for turn in turns)
    tail = (_turn("user", prompt.feedback) if prompt.feedback else "") + "<|im_start|>assistant\n"
    return prefix, conversation, tail


def _leading_system(prompt: Prompt) -> tuple[list[str], list[ChatTurn]]:
    """The texts of the system messages the conversation starts with, and the turns after them."""
    turns = chat_turns(prompt.conversation)
    count = next((index for index, turn in enumerate(turns) if turn.role != "system"), len(turns))
    return [turn.text for turn in turns[:count]], turns[count:]


def _turn(role: str, text: str) -> str:
    return f"<|im_start|>{role}\n{text}<|im_end|>\n"
