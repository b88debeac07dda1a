"""Local GGUF models through llama-cpp-python, answering as JSON under a schema grammar.

What keeps a 2-core CPU fast enough for a per-request proposer (measured with SmolLM2-135M,
bench/proposal_latency.py):
- the prompt starts with ``Prompt.system`` (instructions and tool list) and the KV cache of that
  prefix is reused: the longest common token prefix with the previous call is kept, and a small
  LRU of saved sequence states covers requests that alternate between tool sets (a ~900-token
  prefix costs ~3.5 s to evaluate and under 10 ms to restore, ~20 MB each);
- greedy decoding checks the raw argmax against the grammar first and masks a shortlist, then
  the whole vocabulary, only when the model strays (a full mask costs about half a decode step);
- the grammar admits compact JSON only: every optional space would be one more decode step;
- text the schema forces (``{"name":"``, the rest of a tool name once it is unique, argument
  keys) is evaluated as one batch, then confirmed token by token (10-15% less decode time);
- each evaluation uses every core when nothing else on the machine is runnable, and
  ``n_threads`` (all cores but one) otherwise (see ``_fit_threads``).
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import math
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# llama_cpp is imported before numpy on purpose: on a CUDA machine (an H200 with numpy 2.5) the
# other order made the model load segfault. The ImportError is reported when a model is loaded.
try:
    import llama_cpp  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - exercised only without llama-cpp-python
    llama_cpp = None  # type: ignore[assignment]
import numpy as np

from router.backends.base import BackendError, Generation, Prompt
from router.messages import call_arguments, compact_json, content_text

GRAMMAR_CACHE_SIZE = 16
_SHORTLIST = 64  # top tokens checked against the grammar before masking the whole vocabulary
PREFIX_CACHE_SIZE = 8
ANSWER_MEMORY = 4  # recent answers per output schema, kept as drafts for the next ones
# How long llama.cpp's OpenMP workers stay runnable (spinning) after an evaluation: still at 5 ms,
# gone by 10 ms (bench/proposal_latency.py prints it). A longer spin is only mistaken for other
# work (one thread, the safe side).
OPENMP_SPIN_SECONDS = 0.01

# The grammar converter lets a single optional space around JSON punctuation; every space the
# model emits is a decoded token, so the grammar admits compact JSON only.
_SPACE_RULE = re.compile(r"^space ::= .*$", re.MULTILINE)
# ChatML markers, blanked out of the conversation text that values are copied from.
_CHAT_MARKER = re.compile(r"<\|im_(?:start|end)\|>")
# Scalars of compact JSON: strings (possibly cut off by max_tokens), numbers, literals.
_JSON_SCALAR = re.compile(r'"(?:[^"\\]|\\.)*"?|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null')


def render_chatml(prompt: Prompt) -> tuple[str, str]:
    """The prompt as ChatML: (system prefix, rest). The prefix is stable for a tool set."""
    prefix = _turn("system", prompt.system)
    tool_names: dict[str, str] = {}
    parts: list[str] = []
    for message in prompt.conversation:
        role = message.get("role", "user")
        text = content_text(message.get("content"))
        if role == "assistant":
            calls = []
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                name = function.get("name", "")
                tool_names[call.get("id", "")] = name
                calls.append(
                    compact_json({"name": name, "arguments": call_arguments(function.get("arguments"))})
                )
            parts.append(_turn("assistant", "\n".join(filter(None, [text, *calls]))))
        elif role == "tool":
            # SmolLM2 was not trained on a tool role: a labelled user turn reads as a tool result.
            name = tool_names.get(message.get("tool_call_id", ""), message.get("name", "tool"))
            parts.append(_turn("user", f"Tool result ({name}):\n{text}"))
        else:
            parts.append(_turn("system" if role in ("system", "developer") else "user", text))
    if prompt.feedback:
        parts.append(_turn("user", prompt.feedback))
    parts.append("<|im_start|>assistant\n")
    return prefix, "".join(parts)


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


class LlamaCppBackend:
    """One GGUF model loaded once; ``generate`` is serialised by a per-instance lock."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        prefix_cache_size: int = PREFIX_CACHE_SIZE,
        n_gpu_layers: int = 0,
        extended_drafts: bool = True,
        idle_threads: int = 0,
    ) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise BackendError(f"model file {path} does not exist")
        if llama_cpp is None:
            raise BackendError("llama-cpp-python is not installed (see DESIGN.md for the build flags)")
        self._lib = llama_cpp
        # Default: all cores but one (see MODEL_THREADS in settings for why).
        threads = n_threads or max(1, len(os.sched_getaffinity(0)) - 1)
        try:
            self._llama = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                logits_all=False,  # logprobs come from the last-token logits in our own loop
                n_gpu_layers=n_gpu_layers,  # -1: every layer on the GPU (a CUDA build of llama.cpp)
                verbose=False,
            )
        except Exception as exc:  # llama-cpp raises ValueError, but a bad file can raise anything
            raise BackendError(f"could not load model {path}: {exc}") from exc
        self.model_path = path
        # Drafts from earlier answers and from the conversation (see _draft), besides the text
        # the schema forces; switched off only to measure what they save.
        self.extended_drafts = extended_drafts
        # Threads for an evaluation that starts while nothing else is runnable; 0: n_threads always.
        self._threads = self._current_threads = threads
        self._idle_threads = max(threads, idle_threads)
        self._evaluations_on_idle_threads = 0
        self._evaluated_at = 0.0  # when the last evaluation ended (perf_counter)
        self.n_ctx = n_ctx
        self._ctx = self._llama._ctx.ctx
        self._vocab = self._llama._model.vocab
        self._n_vocab = self._llama.n_vocab()
        self._lock = threading.Lock()
        # How the last call spent its time, for benchmarks and debugging (not part of Generation).
        self.last_stats: dict[str, Any] = {}
        self._grammars: OrderedDict[str, _Grammar] = OrderedDict()
        self._prefix_cache_size = prefix_cache_size
        self._prefix_states: OrderedDict[str, tuple[tuple[int, ...], bytes]] = OrderedDict()
        self._prefix_tokens: OrderedDict[str, list[int]] = OrderedDict()
        self._piece_cache: dict[int, bytes] = {}
        self._prompt_evaluated = 0  # prompt tokens of the last call, evaluated in batches
        self._batches = 0  # model evaluations in the current decode
        # One reusable full-vocabulary candidate array for the (rare) full grammar mask.
        self._full = np.zeros(
            self._n_vocab,
            dtype=np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True),
        )
        self._vocab_ids = np.arange(self._n_vocab, dtype=np.intc)
        self._single = (llama_cpp.llama_token_data * 1)()

    # -- public ---------------------------------------------------------------------------------

    def generate(self, prompt: Prompt) -> Generation:
        """Greedy JSON answer under ``prompt.output_schema``.

        ``decision_logprobs`` holds, for each generated token whose text overlaps a value of the
        answer (the tool name, argument values; not keys, quotes or braces), its log-softmax
        probability under the model's raw logits, before the grammar mask: a low figure means
        the model wanted something else there, even when the grammar made it pick this.
        """
        with self._lock:
            started = time.perf_counter()
            self._evaluations_on_idle_threads = 0
            prefix_text, rest_text = render_chatml(prompt)
            prefix = self._tokenize_prefix(prefix_text)
            rest = self._tokenize(rest_text)
            tokens = prefix + rest
            if len(tokens) + prompt.max_tokens > self.n_ctx:
                raise BackendError(f"prompt of {len(tokens)} tokens does not fit n_ctx={self.n_ctx}")
            grammar = self._grammar(prompt.output_schema)
            try:
                prefix_source, evaluated = self._prefill(prefix_text, prefix, tokens)
                prefilled = time.perf_counter()
                copy_source = _CHAT_MARKER.sub("\n", rest_text)
                text, n_out, logprobs = self._decode(grammar, prompt, copy_source=copy_source)
            except BackendError:
                raise
            except Exception as exc:  # a failed decode leaves the cache unknown: start clean next time
                self._llama.reset()
                self._prompt_evaluated = 0
                raise BackendError(f"llama.cpp generation failed: {exc}") from exc
            finished = time.perf_counter()
            self.last_stats = {
                "prefix": prefix_source,
                "prompt_tokens_evaluated": evaluated,
                "prefill_ms": (prefilled - started) * 1000,
                "decode_ms": (finished - prefilled) * 1000,
                # Model evaluations while decoding: one per token without drafts, fewer with.
                "decode_batches": self._batches,
                # Evaluations (prompt and decode) that ran on idle_threads, the machine being idle.
                "evaluations_on_idle_threads": self._evaluations_on_idle_threads,
            }
            return Generation(
                text=text,
                tokens_in=len(tokens),
                tokens_out=n_out,
                latency_ms=(finished - started) * 1000,
                decision_logprobs=logprobs,
                prompt_text=prefix_text + rest_text,
            )

    @contextmanager
    def _fitted_threads(self) -> Iterator[None]:
        """Around each model evaluation: the thread count for it (see ``_fit_threads``)."""
        self._fit_threads()
        try:
            yield
        finally:
            self._evaluated_at = time.perf_counter()

    def _fit_threads(self) -> None:
        """Every core (``idle_threads``) if nothing else on the machine is runnable now, else
        ``n_threads``.

        On an idle 2-core machine two threads cut a routine proposal by about a fifth to a third.
        But llama.cpp's threads wait for each other at every layer, so when another process takes
        a core, a thread that is not scheduled stalls the rest: with a busy neighbour, two threads
        made a proposal take 8.9 s instead of 1.4 s. Deciding per evaluation (a few per answer,
        tens of ms each) bounds what a wrong guess costs to one evaluation.
        """
        if self._idle_threads <= self._threads:
            return
        runnable = runnable_threads()
        # The calling thread is runnable itself. So are, for a few ms after an evaluation, the
        # OpenMP workers it used: they spin before they sleep (measured: 5-10 ms).
        own = 1
        if time.perf_counter() - self._evaluated_at < OPENMP_SPIN_SECONDS:
            own += self._current_threads - 1
        wanted = self._idle_threads if runnable is not None and runnable <= own else self._threads
        if wanted != self._current_threads:
            self._lib.llama_set_n_threads(self._ctx, wanted, wanted)
            self._current_threads = wanted
        if wanted == self._idle_threads:
            self._evaluations_on_idle_threads += 1

    def prefix_state_bytes(self) -> int:
        """Memory held by saved prefix states (each is the KV cache of one system prefix)."""
        return sum(len(data) for _, data in self._prefix_states.values())

    # -- prompt and prefix cache ----------------------------------------------------------------

    def _tokenize(self, text: str) -> list[int]:
        # BOS id 1 is <|im_start|> in SmolLM2's GGUF: never add it, parse the ChatML markers.
        return list(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _tokenize_prefix(self, prefix_text: str) -> list[int]:
        key = _hash(prefix_text)
        cached = self._prefix_tokens.get(key)
        if cached is None:
            cached = self._tokenize(prefix_text)
            self._prefix_tokens[key] = cached
            while len(self._prefix_tokens) > 4 * max(1, self._prefix_cache_size):
                self._prefix_tokens.popitem(last=False)
        else:
            self._prefix_tokens.move_to_end(key)
        return list(cached)

    def _prefill(self, prefix_text: str, prefix: list[int], tokens: list[int]) -> tuple[str, int]:
        """Bring the KV cache to ``tokens`` with as little prompt evaluation as possible.

        Returns where the system prefix came from ("cached", "restored" or "evaluated") and how
        many prompt tokens were evaluated.
        """
        llama = self._llama
        # Reuse only what the previous call evaluated as prompt. Generated tokens went through
        # llama.cpp's single-token path, whose numbers differ from the batched prompt path (up
        # to 0.4 in a logit here); reusing them would make answers depend on cache history.
        reusable = min(llama.n_tokens, self._prompt_evaluated)
        cached = _common_prefix(llama.input_ids[:reusable], tokens)
        source = "cached" if cached >= len(prefix) else "evaluated"
        evaluated = 0
        key = _hash(prefix_text)
        if self._prefix_cache_size > 0:
            if cached < len(prefix) and key in self._prefix_states and self._restore_prefix(key, prefix):
                cached, source = len(prefix), "restored"
            elif key not in self._prefix_states:
                # Evaluate (or keep) exactly the prefix, then remember its state for later.
                llama.n_tokens = min(cached, len(prefix))
                evaluated = len(prefix) - llama.n_tokens
                with self._fitted_threads():
                    llama.eval(prefix[llama.n_tokens :])
                self._save_prefix(key, prefix)
                cached = len(prefix)
        # Re-evaluate at least two tokens: the sampler needs logits for the last position, and a
        # one-token batch takes the single-token path (see above), so would change the answer.
        llama.n_tokens = max(0, min(cached, len(tokens) - 2))
        evaluated += len(tokens) - llama.n_tokens
        self._prompt_evaluated = 0  # until the evaluation below has succeeded
        with self._fitted_threads():
            llama.eval(tokens[llama.n_tokens :])
        self._prompt_evaluated = len(tokens)
        return source, evaluated

    def _save_prefix(self, key: str, prefix: list[int]) -> None:
        lib, ctx = self._lib, self._ctx
        self._llama._ctx.kv_cache_seq_rm(-1, len(prefix), -1)
        size = lib.llama_state_seq_get_size(ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = lib.llama_state_seq_get_data(ctx, buffer, size, 0)
        if not written:
            return  # not fatal: this prefix will just be evaluated again next time
        self._prefix_states[key] = (tuple(prefix), bytes(buffer)[:written])
        while len(self._prefix_states) > self._prefix_cache_size:
            self._prefix_states.popitem(last=False)

    def _restore_prefix(self, key: str, prefix: list[int]) -> bool:
        saved_tokens, data = self._prefix_states[key]
        if list(saved_tokens) != prefix:  # a hash collision would poison the cache
            del self._prefix_states[key]
            return False
        self._prefix_states.move_to_end(key)
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if self._lib.llama_state_seq_set_data(self._ctx, buffer, len(data), 0) != len(data):
            raise BackendError("llama.cpp could not restore a saved prompt prefix")
        self._llama.input_ids[: len(prefix)] = prefix
        self._llama.n_tokens = len(prefix)
        return True

    # -- grammar-constrained greedy decoding ----------------------------------------------------

    def _grammar(self, schema: dict[str, Any]) -> _Grammar:
        key = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        grammar = self._grammars.get(key)
        if grammar is None:
            grammar = _Grammar(self._lib, self._vocab, schema)
            self._grammars[key] = grammar
            while len(self._grammars) > GRAMMAR_CACHE_SIZE:
                self._grammars.popitem(last=False)[1].close()
        else:
            self._grammars.move_to_end(key)
        grammar.reset()
        return grammar

    def _decode(
        self, grammar: _Grammar, prompt: Prompt, copy_source: str = ""
    ) -> tuple[str, int, list[float]]:
        """Greedy decoding under the grammar, with drafts of the text that is likely next.

        A draft (see ``_draft``: earlier answers, the text the schema forces, a value being
        copied from ``copy_source``, the conversation) is evaluated as one batch (logits at
        every position), then each draft token is kept only while it is the model's own greedy
        choice, so the answer is what token-by-token greedy decoding gives (up to float
        rounding: batched and single-token evaluation can flip a near-tie). Feeding forced text
        blindly cut the model's usual tokens ('{' '"' where the tokenizer says '{"') and made
        SmolLM2 answer empty argument values.
        """
        llama = self._llama
        self._batches = 0
        out = bytearray()
        # (byte start, byte end, logprob) of every token; None where the grammar left no choice.
        spans: list[tuple[int, int, float | None]] = []
        generated: list[int] = []
        draft: list[int] = []  # evaluated draft tokens not yet confirmed by the model
        index = -1  # where the logits for the next token are in the last batch
        while len(spans) < prompt.max_tokens:
            token, logprob = self._greedy(grammar, index)
            if token < 0 or self._lib.llama_vocab_is_eog(self._vocab, token):
                break  # no way forward under the grammar, or the model is done
            grammar.accept(token)
            generated.append(token)
            piece = self._piece(token)
            spans.append((len(out), len(out) + len(piece), logprob))
            out += piece
            if b"}" in piece and _complete_json(out):
                grammar.remember(generated)
                break  # the grammar would only allow end-of-text now: skip decoding it
            if draft:
                if token == draft[0]:
                    draft.pop(0)
                    index = -1 if not draft else index + 1
                    continue
                # The model chose otherwise: drop the rest of the draft from the cache.
                llama.n_tokens -= len(draft)
            draft = self._draft(grammar, out, generated, prompt.max_tokens - len(spans), copy_source)
            if draft:
                index = 0
                continue
            with self._fitted_threads():
                llama.eval([token])
            self._batches += 1
            index = -1
        text = out.decode("utf-8", errors="replace")
        return text, len(spans), _decision_logprobs(text, spans)

    def _greedy(self, grammar: _Grammar, index: int) -> tuple[int, float | None]:
        """The grammar-allowed argmax, and how sure the model was of it among what it could say.

        The log-probability is taken over the tokens the grammar allows among the model's top
        candidates: the choice the model actually had. A token the grammar forces (only one is
        allowed) carries no decision and gets None; measured against the whole vocabulary it
        only said how much the model wanted to write prose instead of JSON, which made the
        score useless on BFCL (AUROC 0.49 against exact match).
        """
        logits = np.ctypeslib.as_array(
            self._lib.llama_get_logits_ith(self._ctx, index), shape=(self._n_vocab,)
        )
        token = int(np.argmax(logits))
        # Checking the argmax alone is cheap; masking the whole vocabulary is not (~5 ms).
        if not grammar.allows(token, self._single):
            token = grammar.best(logits, self._full, self._vocab_ids)
            if token < 0:
                return token, None
        shortlist = np.argpartition(logits, -_SHORTLIST)[-_SHORTLIST:].astype(np.intc)
        if token not in shortlist:
            shortlist = np.append(shortlist, np.intc(token))
        allowed = grammar.allowed_logits(logits, shortlist, self._full[: len(shortlist)])
        allowed = allowed[np.isfinite(allowed)]
        if len(allowed) <= 1:
            return token, None
        top = float(allowed.max())
        return token, float(logits[token]) - top - math.log(float(np.exp(allowed - top).sum()))

    def _draft(
        self, grammar: _Grammar, out: bytearray, generated: list[int], budget: int, copy_source: str = ""
    ) -> list[int]:
        """Evaluate the last generated token plus the text likely next in one batch; return the
        draft (the tokens after that one). The batch carries logits at every position so each
        draft token can be checked as it comes.

        Three guesses, best first: how the model went on from here in its last answers to this
        schema (in its own tokens, so it agrees with itself more than a re-tokenization does);
        the text the schema forces (tokenized from before the last token, kept only when that
        token is its first); the rest of a value being copied from the conversation.
        """
        if budget < 2:
            return []
        token = generated[-1]
        recalled = grammar.recalled(generated, self._piece, out) if self.extended_drafts else []
        tokens = [token, *recalled]
        if len(tokens) < 2:
            before = out[: len(out) - len(self._piece(token))].decode("utf-8", errors="ignore")
            forced = grammar.forced_text(before)
            if forced:
                tokens = self._tokenize(forced)
                if tokens[0] != token:
                    return []
            elif self.extended_drafts:
                tokens = [
                    token,
                    *self._copied_rest(out.decode("utf-8", errors="ignore"), copy_source, grammar),
                ]
        tokens = tokens[:budget]
        if len(tokens) < 2:
            return []
        llama = self._llama
        llama._ctx.kv_cache_seq_rm(-1, llama.n_tokens, -1)
        llama._batch.set_batch(batch=tokens, n_past=llama.n_tokens, logits_all=True)
        with self._fitted_threads():
            llama._ctx.decode(llama._batch)
        self._batches += 1
        llama.input_ids[llama.n_tokens : llama.n_tokens + len(tokens)] = tokens
        llama.n_tokens += len(tokens)
        return tokens[1:]

    def _copied_rest(self, text: str, source: str, grammar: _Grammar) -> list[int]:
        """A draft for a string value the model is copying from the conversation (ids, emails,
        names): the rest of it as found in ``source``, then, when the whole value was found, its
        closing quote and what follows, as the model wrote them before (else as the schema
        forces them)."""
        typed = _open_string_value(text)
        if not typed or not source:
            return []
        rest, whole = _copied_value_rest(typed, source)
        if not whole:
            return self._tokenize(rest) if rest else []
        closing = grammar.recalled_closing(text, typed, self._piece)
        if closing:
            return [*(self._tokenize(rest) if rest else []), *closing]
        return self._tokenize(rest + '"' + grammar.forced_text(text + rest + '"'))

    def _piece(self, token: int) -> bytes:
        piece = self._piece_cache.get(token)
        if piece is None:
            piece = bytes(self._llama.detokenize([token], special=True))
            self._piece_cache[token] = piece
        return piece


class _Grammar:
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
            if _open_string_value(text):
                return tokens[:index]
        return tokens

    def reset(self) -> None:
        # A fresh clone of the untouched sampler: llama_sampler_reset re-parses the whole
        # grammar (~5 ms for 16 tools), a clone copies it (~0.6 ms).
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
        shortlist = np.argpartition(logits, -_SHORTLIST)[-_SHORTLIST:].astype(np.intc)
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


def _copied_value_rest(typed: str, source: str) -> tuple[str, bool]:
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


def _open_string_value(text: str) -> str | None:
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


def _decision_logprobs(text: str, spans: list[tuple[int, int, float | None]]) -> list[float]:
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


def _complete_json(raw: bytearray) -> bool:
    try:
        return isinstance(json.loads(raw.decode("utf-8")), dict)
    except ValueError:
        return False


def runnable_threads() -> int | None:
    """How many threads are runnable on the whole machine at this instant, the caller included
    (the kernel's count in /proc/loadavg); None where there is no such file."""
    try:
        with open("/proc/loadavg", "rb") as loadavg:
            return int(loadavg.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return None


def _common_prefix(cached: Any, tokens: list[int]) -> int:
    n = 0
    for a, b in zip(cached, tokens, strict=False):
        if a != b:
            break
        n += 1
    return n


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _turn(role: str, text: str) -> str:
    return f"<|im_start|>{role}\n{text}<|im_end|>\n"
