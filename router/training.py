"""LoRA adapters for a small model, trained from dataset rows on its own GGUF base and written
back as a GGUF LoRA adapter that llama.cpp loads beside the base (LEARNING-LOOP.md's recipe).

The base is the GGUF the router serves, dequantised by transformers, so training sees the weights
llama.cpp runs (effectively QLoRA on the served quantisation). Each row is rendered exactly as the
llama.cpp backend renders a request (router.prompts.build_prompt, then the model's chat template),
and the loss is on the answer's tokens only: the JSON the grammar makes the model write.

Tensor layout: PEFT's ``lora_A`` (r, in) and ``lora_B`` (out, r) go into the adapter untransposed.
llama.cpp's conversion permutes the rows of q and k for the llama architecture only, so a llama
base gets B's rows of q and k permuted the same way; a qwen2 base (q/k/v biases, no permutation)
gets them as they are. tests/test_training.py checks the result at the logit level.

Needs the training extra (requirements-train.txt): torch, transformers, peft, gguf.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from router.backends.chat_templates import chat_format_of, render_prompt
from router.contracts import TaskType
from router.model_files import gguf_metadata
from router.openai_actions import action_from_message, answer_text
from router.prompts import TaskSpec, build_prompt

# Which GGUF tensor each PEFT target module is, per layer.
GGUF_TENSORS = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output"}
# Architectures whose GGUF conversion permutes the rows of q and k (llama.cpp's convert script).
PERMUTED_QK = frozenset({"llama"})


class TrainingUnavailable(Exception):
    """The training extra is not installed, or the base cannot be trained here."""


@dataclass
class TrainingConfig:
    steps: int = 30
    batch_size: int = 4
    learning_rate: float = 1e-3
    warmup_steps: int = 2
    rank: int = 16
    alpha: int = 32
    # Rows whose prompt and answer are longer are skipped (training time grows with the square).
    max_tokens: int = 2048
    target_modules: tuple[str, ...] = tuple(GGUF_TENSORS)
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "target_modules": list(self.target_modules)}


@dataclass
class TrainingResult:
    path: Path
    architecture: str
    losses: list[float]
    seconds: float
    rows_used: int
    rows_skipped: dict[str, int] = field(default_factory=dict)
    trainable_parameters: int = 0
    # The trained PEFT model, for a logit-level check against llama.cpp (not stored).
    model: Any = field(default=None, repr=False)

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def training_text(row: dict[str, Any], chat_format: str) -> tuple[str, str]:
    """(prompt, answer) for a dataset row, as the served model sees and writes them."""
    *conversation, final = row["messages"]
    action = action_from_message(final)
    tools = row.get("tools") or []
    calls = action.get("tool_calls") or []
    task = TaskSpec(
        task_type=TaskType.TOOL_USE if tools else TaskType.RESPOND,
        messages=conversation,
        tools=tools,
        parallel_tool_calls=len(calls) > 1,
        may_reply=bool(tools) and not calls,
    )
    prefix, middle, tail = render_prompt(build_prompt(task), chat_format)
    return prefix + middle + tail, answer_text(action) + "<|im_end|>"


def _imports() -> tuple[Any, Any, Any, Any]:
    try:
        import gguf
        import peft
        import torch
        import transformers
    except ImportError as exc:
        raise TrainingUnavailable(
            f"the training extra is not installed ({exc.name}): "
            ".venv/bin/pip install -r requirements-train.txt"
        ) from None
    return torch, transformers, peft, gguf


def load_base(gguf_path: Path) -> tuple[Any, Any]:
    """(tokenizer, fp32 model) of a GGUF base, through transformers' GGUF loader."""
    torch, transformers, _, _ = _imports()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    return tokenizer, model


def train_adapter(
    gguf_path: Path,
    rows: Iterable[dict[str, Any]],
    out_path: Path,
    config: TrainingConfig | None = None,
    *,
    progress: Callable[[int, float], Any] | None = None,
    loaded: tuple[Any, Any] | None = None,
) -> TrainingResult:
    """Trains a LoRA adapter for ``gguf_path`` on ``rows`` (dataset JSONL records) and writes it
    to ``out_path`` as a GGUF adapter. ``progress(step, loss)`` is called after each step."""
    torch, _, peft, _ = _imports()
    config = config or TrainingConfig()
    started = time.perf_counter()
    architecture = str(gguf_metadata(gguf_path, ("general.architecture",)).get("general.architecture", ""))
    chat_format = chat_format_of(architecture)
    tokenizer, base = loaded or load_base(gguf_path)
    examples, skipped = _examples(rows, tokenizer, chat_format, config.max_tokens)
    if not examples:
        raise TrainingUnavailable(f"no row to train on (skipped: {skipped or 'none given'})")
    torch.manual_seed(config.seed)
    model = peft.get_peft_model(
        base,
        peft.LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            target_modules=list(config.target_modules),
            lora_dropout=0.0,
            bias="none",
            task_type="CAUSAL_LM",
        ),
    )
    model.train()
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)

    def rate(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        return max(0.05, 1 - (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    order = random.Random(config.seed)
    queue: list[tuple[list[int], list[int]]] = []
    losses: list[float] = []
    for step in range(config.steps):
        optimizer.zero_grad()
        total = 0.0
        for _ in range(config.batch_size):
            if not queue:
                queue = list(examples)
                order.shuffle(queue)
            input_ids, labels = queue.pop()
            output = model(input_ids=torch.tensor([input_ids]), labels=torch.tensor([labels]))
            (output.loss / config.batch_size).backward()
            total += float(output.loss.detach()) / config.batch_size
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(round(total, 6))
        if progress is not None:
            progress(step + 1, total)
    model.eval()
    write_gguf_adapter(model, out_path, architecture=architecture, alpha=config.alpha, n_head=_heads(base))
    return TrainingResult(
        path=out_path,
        architecture=architecture,
        losses=losses,
        seconds=time.perf_counter() - started,
        rows_used=len(examples),
        rows_skipped=skipped,
        trainable_parameters=sum(parameter.numel() for parameter in trainable),
        model=model,
    )


def _examples(
    rows: Iterable[dict[str, Any]], tokenizer: Any, chat_format: str, max_tokens: int
) -> tuple[list[tuple[list[int], list[int]]], dict[str, int]]:
    examples: list[tuple[list[int], list[int]]] = []
    skipped: dict[str, int] = {}
    for row in rows:
        prompt, answer = training_text(row, chat_format)
        # The chat template's markers are in the text: neither side adds a BOS or other tokens.
        prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
        if len(prompt_ids) + len(answer_ids) > max_tokens:
            skipped["too_long"] = skipped.get("too_long", 0) + 1
            continue
        examples.append((prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids))
    return examples, skipped


def _heads(model: Any) -> tuple[int, int]:
    return int(model.config.num_attention_heads), int(model.config.num_key_value_heads)


def _permute_rows(b: Any, heads: int) -> Any:
    """llama.cpp's q/k row permutation (convert_hf_to_gguf's ``permute``), for B's rows."""
    out, rank = b.shape
    return b.reshape(heads, 2, out // heads // 2, rank).swapaxes(1, 2).reshape(out, rank)


def write_gguf_adapter(
    model: Any, path: Path, *, architecture: str, alpha: int, n_head: tuple[int, int]
) -> None:
    """Writes the PEFT model's LoRA weights as a GGUF LoRA adapter for ``architecture``."""
    _, _, _, gguf = _imports()
    tensors: dict[str, Any] = {}
    for name, parameter in model.named_parameters():
        if "lora_" not in name:
            continue
        # e.g. base_model.model.model.layers.3.self_attn.q_proj.lora_A.default.weight
        parts = name.split(".")
        layer = int(parts[parts.index("layers") + 1])
        module = next(part for part in parts if part in GGUF_TENSORS)
        kind = "lora_a" if ".lora_A." in name else "lora_b"
        value = parameter.detach().float().numpy()
        if kind == "lora_b" and architecture in PERMUTED_QK and module in ("q_proj", "k_proj"):
            value = _permute_rows(value, n_head[0] if module == "q_proj" else n_head[1])
        tensors[f"blk.{layer}.{GGUF_TENSORS[module]}.weight.{kind}"] = value
    if not tensors:
        raise TrainingUnavailable("the model has no LoRA weights to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch=architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    # Without it llama.cpp scales the adapter by 1.0 instead of alpha / r, silently.
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for name in sorted(tensors):
        writer.add_tensor(name, tensors[name].astype("float16"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read_rows(path: Path) -> list[dict[str, Any]]:
    """A dataset split's JSONL rows."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def logit_gap(a: Any, b: Any) -> float:
    """Mean absolute difference of two logit vectors (numbers, for the logit-level check)."""
    pairs = list(zip(a, b, strict=True))
    return sum(abs(float(x) - float(y)) for x, y in pairs) / len(pairs) if pairs else math.nan
