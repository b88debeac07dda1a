"""A real training run: a few LoRA steps on Qwen2.5-Coder-0.5B's GGUF base, written as a GGUF
adapter that llama.cpp loads, checked at the logit level against transformers (LEARNING-LOOP.md).

qwen2's GGUF conversion does not permute q and k, so neither does the adapter writer: the check
is what shows that is right (with a wrong layout the llama.cpp logits drift from transformers').
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import pytest
import torch
import transformers

from router.backends.llama_cpp import LlamaCppBackend
from router.model_files import QWEN_CODER_05B_PATH, gguf_metadata, resolve_model_path
from router.prompts import TaskSpec, build_prompt
from router.training import TrainingConfig, train_adapter, training_text
from tests.factories import tools

pytestmark = [pytest.mark.real_model]

TOOLS = tools("get_order_details", "cancel_pending_order")


def row(order: str) -> dict[str, Any]:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_order_details", "arguments": json.dumps({"order_id": order})},
    }
    return {
        "messages": [
            {"role": "user", "content": f"Hey, anything new on {order}?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
        ],
        "tools": TOOLS,
        "meta": {"cluster": "", "source": "human", "trace": order},
    }


def last_logits(model_path: Path, ids: list[int], lora: Path | None = None) -> np.ndarray:
    llm = llama_cpp.Llama(
        model_path=str(model_path), lora_path=str(lora) if lora else None, n_ctx=2048, verbose=False
    )
    llm.eval(ids)
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()


def test_a_few_steps_make_an_adapter_llama_cpp_loads_and_agrees_with(tmp_path: Path) -> None:
    base = resolve_model_path(QWEN_CODER_05B_PATH)
    out = tmp_path / "adapter.gguf"
    result = train_adapter(
        base,
        [row(f"#W{1000000 + i}") for i in range(6)],
        out,
        TrainingConfig(steps=3, batch_size=2, max_tokens=1500),
    )
    assert result.architecture == "qwen2" and len(result.losses) == 3
    assert result.losses[-1] < result.losses[0]
    header = gguf_metadata(out, ("general.type", "adapter.type", "adapter.lora.alpha"))
    assert header == {"general.type": "adapter", "adapter.type": "lora", "adapter.lora.alpha": 32.0}

    # The logit-level check, on a prompt it was not trained on.
    prompt, _ = training_text(row("#W7777777"), "qwen_tools")
    model = result.model
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(base.parent), gguf_file=base.name)
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    with torch.no_grad():
        hf_adapted = model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
        with model.disable_adapter():
            hf_base = model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
    cpp_base, cpp_adapted = last_logits(base, ids), last_logits(base, ids, out)
    n = min(len(hf_base), len(cpp_base))
    base_gap = float(np.mean(np.abs(hf_base[:n] - cpp_base[:n])))
    adapted_gap = float(np.mean(np.abs(hf_adapted[:n] - cpp_adapted[:n])))
    moved = float(np.mean(np.abs(cpp_adapted[:n] - cpp_base[:n])))
    # The runtimes agree with the adapter as well as without it (Q4 with 8-bit activations against
    # fp32), while the adapter moves the logits far more than that.
    assert adapted_gap < 2 * base_gap + 0.05, (base_gap, adapted_gap)
    assert moved > 10 * adapted_gap, (moved, adapted_gap)
    assert int(hf_adapted[:n].argmax()) == int(cpp_adapted[:n].argmax())

    # And the backend the router serves loads it and answers under the grammar.
    backend = LlamaCppBackend(base, n_ctx=2048, lora_path=out)
    task = TaskSpec("tool_use", [{"role": "user", "content": "Hey, anything new on #W7777777?"}], TOOLS)
    answer = json.loads(backend.generate(build_prompt(task)).text)
    assert answer == {"name": "get_order_details", "arguments": {"order_id": "#W7777777"}}
