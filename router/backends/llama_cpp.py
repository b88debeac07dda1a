"""Local GGUF models through llama-cpp-python, answering as JSON under a schema grammar.

What keeps a 2-core CPU fast enough for a per-request proposer (bench/proposal_latency.py
measures each; the README has the figures):
- the prompt starts with ``Prompt.system`` (instructions and tool list) and the KV cache of that
  prefix is reused: the longest common token prefix with the previous call is kept, and a small
  LRU of saved sequence states covers requests that alternate between tool sets (restoring a
  prefix is far cheaper than evaluating it again);
- greedy decoding checks the raw argmax against the grammar first and masks a shortlist, then
  the whole vocabulary, only when the model strays (a full mask costs a good part of a decode step);
- the grammar admits compact JSON only: every optional space would be one more decode step;
- text the schema forces (``{"name":"``, the rest of a tool name once it is unique, argument
  keys), earlier answers and values being copied are evaluated as one batch, then confirmed token
  by token (the module llama_grammar.py finds them);
- each evaluation uses every core when nothing else on the machine is runnable, and
  ``n_threads`` (all cores but one) otherwise (see ``_fit_threads``).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import re
import threading
import time
from collections import OrderedDict
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
from router.backends.chat_templates import chat_format_of, render_prompt
from router.backends.decision_tokens import chosen_token_logprobs
from router.backends.llama_grammar import SHORTLIST, Grammar, copied_value_rest, open_string_value
from router.messages import chat_turns
from router.model_files import gguf_metadata

GRAMMAR_CACHE_SIZE = 16
# Memory for saved sequence states per model (settings.MODEL_STATE_CACHE_MB in the product); the
# KV cache of one token costs the model's layers times its KV heads times their width.
STATE_CACHE_BYTES = 2048 * 1024 * 1024
STATE_CACHE_ENTRIES = 32
# How long llama.cpp's OpenMP workers may stay runnable (spinning) after an evaluation
# (bench/proposal_latency.py prints the window). A longer spin is only mistaken for other work
# (one thread, the safe side).
OPENMP_SPIN_SECONDS = 0.01

# ChatML markers, blanked out of the conversation text that values are copied from.
_CHAT_MARKER = re.compile(r"<\|im_(?:start|end)\|>")


def _copy_source(prompt: Prompt) -> str:
    """The text a value being written may be copied from: what the agent sent, never the
    feedback reviewq added (a retry once copied the feedback's own words into every argument)."""
    return _CHAT_MARKER.sub("\n", "\n".join(turn.as_text() for turn in chat_turns(prompt.conversation)))


class LlamaCppBackend:
    """One GGUF model loaded once; ``generate`` is serialised by a per-instance lock."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        state_cache_bytes: int = STATE_CACHE_BYTES,
        n_gpu_layers: int = 0,
        extended_drafts: bool = True,
        idle_threads: int = 0,
        lora_path: str | Path | None = None,
    ) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise BackendError(f"model file {path} does not exist")
        if lora_path is not None and not Path(lora_path).is_file():
            raise BackendError(f"adapter file {lora_path} does not exist")
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
                # A LoRA adapter (router/training.py) applied over the base at every evaluation.
                lora_path=str(lora_path) if lora_path is not None else None,
                verbose=False,
            )
        except Exception as exc:  # llama-cpp raises ValueError, but a bad file can raise anything
            raise BackendError(f"could not load model {path}: {exc}") from exc
        self.model_path = path
        self.lora_path = Path(lora_path) if lora_path is not None else None
        try:
            architecture = str(gguf_metadata(path, ("general.architecture",)).get("general.architecture", ""))
        except (OSError, ValueError):
            architecture = ""
        self.chat_format = chat_format_of(architecture)
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
        self._grammars: OrderedDict[str, Grammar] = OrderedDict()
        # Saved sequence states (the KV cache of a token prefix: a system prompt with its tools, or
        # a conversation up to its last message), most recently used last, within a byte budget.
        self._state_cache_bytes = state_cache_bytes
        self._states: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
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
            prefix_text, conversation_text, tail_text = render_prompt(prompt, self.chat_format)
            prefix = self._tokenize_prefix(prefix_text)
            conversation = self._tokenize(conversation_text)
            tokens = prefix + conversation + self._tokenize(tail_text)
            if len(tokens) + prompt.max_tokens > self.n_ctx:
                raise BackendError(f"prompt of {len(tokens)} tokens does not fit n_ctx={self.n_ctx}")
            grammar = self._grammar(prompt.output_schema)
            try:
                reused, evaluated = self._prefill(tokens, len(prefix), len(prefix) + len(conversation))
                prefilled = time.perf_counter()
                copy_source = _copy_source(prompt)
                text, generated, logprobs, margins = self._decode(grammar, prompt.max_tokens, copy_source)
                n_out = len(generated)
            except BackendError:
                raise
            except Exception as exc:  # a failed decode leaves the cache unknown: start clean next time
                self._llama.reset()
                self._prompt_evaluated = 0
                raise BackendError(f"llama.cpp generation failed: {exc}") from exc
            finished = time.perf_counter()
            self.last_stats = {
                # How much of the prompt was already in the cache or a saved state: "none", "prefix"
                # (the system prompt and tools) or "conversation" (an earlier turn of it).
                "reused": reused,
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
                decision_margins=margins,
                prompt_text=prefix_text + conversation_text + tail_text,
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

        On an idle machine every core makes a proposal faster. But llama.cpp's threads wait for
        each other at every layer, so when another process takes a core, a thread that is not
        scheduled stalls the rest: with a busy neighbour, two threads on two cores made a proposal
        several times slower than one (README, "Threads"). Deciding per evaluation (a few per
        answer) bounds what a wrong guess costs to one evaluation.
        """
        if self._idle_threads <= self._threads:
            return
        runnable = runnable_threads()
        # The calling thread is runnable itself. So are, for a few ms after an evaluation, the
        # OpenMP workers it used: they spin before they sleep (OPENMP_SPIN_SECONDS).
        own = 1
        if time.perf_counter() - self._evaluated_at < OPENMP_SPIN_SECONDS:
            own += self._current_threads - 1
        wanted = self._idle_threads if runnable is not None and runnable <= own else self._threads
        if wanted != self._current_threads:
            self._lib.llama_set_n_threads(self._ctx, wanted, wanted)
            self._current_threads = wanted
        if wanted == self._idle_threads:
            self._evaluations_on_idle_threads += 1

    def saved_state_bytes(self) -> int:
        """Memory held by saved sequence states (system prefixes and conversations)."""
        return sum(len(data) for data in self._states.values())

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
            while len(self._prefix_tokens) > 4 * STATE_CACHE_ENTRIES:
                self._prefix_tokens.popitem(last=False)
        else:
            self._prefix_tokens.move_to_end(key)
        return list(cached)

    def _prefill(self, tokens: list[int], prefix_end: int, conversation_end: int) -> tuple[str, int]:
        """Bring the KV cache to ``tokens`` with as little prompt evaluation as possible.

        ``tokens[:prefix_end]`` is the system prefix (stable for a tool set) and
        ``tokens[:conversation_end]`` that plus the conversation (which the next turn of the same
        conversation starts with). The longest of these already in the KV cache or in a saved
        state is reused; what is evaluated past either point is saved there for later calls.
        Returns what was reused ("none", "prefix" or "conversation") and how many prompt tokens
        were evaluated.
        """
        llama = self._llama
        # Reuse only what the previous call evaluated as prompt. Generated tokens went through
        # llama.cpp's single-token path, whose numbers differ from the batched prompt path (up
        # to 0.4 in a logit here); reusing them would make answers depend on cache history.
        reusable = min(llama.n_tokens, self._prompt_evaluated)
        cached = _common_prefix(llama.input_ids[:reusable], tokens)
        saved = self._longest_saved(tokens[:conversation_end])
        if saved > cached and self._restore(tuple(tokens[:saved])):
            cached = saved
        reused = "conversation" if cached > prefix_end else "prefix" if cached == prefix_end else "none"
        self._prompt_evaluated = 0  # until the evaluations below have succeeded
        evaluated = 0
        for point in (prefix_end, conversation_end):
            if cached < point:
                # Evaluate up to the save point, then keep its state for the calls to come.
                llama.n_tokens = cached
                with self._fitted_threads():
                    llama.eval(tokens[cached:point])
                evaluated += point - cached
                cached = point
                self._save(tuple(tokens[:point]), supersedes_after=prefix_end)
        # Re-evaluate at least two tokens: the sampler needs logits for the last position, and a
        # one-token batch takes the single-token path (see above), so would change the answer.
        llama.n_tokens = max(0, min(cached, len(tokens) - 2))
        evaluated += len(tokens) - llama.n_tokens
        with self._fitted_threads():
            llama.eval(tokens[llama.n_tokens :])
        self._prompt_evaluated = len(tokens)
        return reused, evaluated

    def _longest_saved(self, tokens: list[int]) -> int:
        """The length of the longest saved state whose tokens begin ``tokens`` (0: none)."""
        best = 0
        for saved in self._states:
            if best < len(saved) <= len(tokens) and tokens[: len(saved)] == list(saved):
                best = len(saved)
        return best

    def _save(self, tokens: tuple[int, ...], supersedes_after: int) -> None:
        """Keep the KV cache, which holds exactly ``tokens``, as a saved state.

        A saved state longer than ``supersedes_after`` tokens (an earlier turn of the conversation
        being saved) that ``tokens`` begin with is dropped: the new state serves what it served,
        while the system prefix's state stays for the agent's other conversations.
        """
        if self._state_cache_bytes <= 0 or tokens in self._states:
            if tokens in self._states:
                self._states.move_to_end(tokens)
            return
        for earlier in [t for t in self._states if supersedes_after < len(t) < len(tokens)]:
            if tokens[: len(earlier)] == earlier:
                del self._states[earlier]
        lib, ctx = self._lib, self._ctx
        size = lib.llama_state_seq_get_size(ctx, 0)
        if size > self._state_cache_bytes:
            return  # bigger than the whole budget: evaluated again next time
        buffer = (ctypes.c_uint8 * size)()
        written = lib.llama_state_seq_get_data(ctx, buffer, size, 0)
        if not written:
            return  # not fatal: this prefix will just be evaluated again next time
        self._states[tokens] = bytes(buffer)[:written]
        while len(self._states) > STATE_CACHE_ENTRIES or self.saved_state_bytes() > self._state_cache_bytes:
            self._states.popitem(last=False)

    def _restore(self, tokens: tuple[int, ...]) -> bool:
        data = self._states[tokens]
        self._states.move_to_end(tokens)
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        self._llama._ctx.kv_cache_seq_rm(-1, 0, -1)
        if self._lib.llama_state_seq_set_data(self._ctx, buffer, len(data), 0) != len(data):
            raise BackendError("llama.cpp could not restore a saved prompt state")
        self._llama.input_ids[: len(tokens)] = tokens
        self._llama.n_tokens = len(tokens)
        return True

    # -- grammar-constrained greedy decoding ----------------------------------------------------

    def _grammar(self, schema: dict[str, Any]) -> Grammar:
        key = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        grammar = self._grammars.get(key)
        if grammar is None:
            grammar = Grammar(self._lib, self._vocab, schema)
            self._grammars[key] = grammar
            while len(self._grammars) > GRAMMAR_CACHE_SIZE:
                self._grammars.popitem(last=False)[1].close()
        else:
            self._grammars.move_to_end(key)
        grammar.reset()
        return grammar

    def _decode(
        self, grammar: Grammar, budget: int, copy_source: str = ""
    ) -> tuple[str, list[int], list[float], list[float]]:
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
        # (byte start, byte end, margin to the runner-up) of every token, alike.
        margins: list[tuple[int, int, float | None]] = []
        generated: list[int] = []
        draft: list[int] = []  # evaluated draft tokens not yet confirmed by the model
        index = -1  # where the logits for the next token are in the last batch
        while len(spans) < budget:
            token, logprob, margin = self._greedy(grammar, index)
            if token < 0 or self._lib.llama_vocab_is_eog(self._vocab, token):
                break  # no way forward under the grammar, or the model is done
            grammar.accept(token)
            generated.append(token)
            piece = self._piece(token)
            spans.append((len(out), len(out) + len(piece), logprob))
            margins.append((len(out), len(out) + len(piece), margin))
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
            draft = self._draft(grammar, out, generated, budget - len(spans), copy_source)
            if draft:
                index = 0
                continue
            with self._fitted_threads():
                llama.eval([token])
            self._batches += 1
            index = -1
        text = out.decode("utf-8", errors="replace")
        return text, generated, chosen_token_logprobs(text, spans), chosen_token_logprobs(text, margins)

    def _greedy(self, grammar: Grammar, index: int) -> tuple[int, float | None, float | None]:
        """The grammar-allowed argmax, how sure the model was of it among what it could say, and
        its margin over the runner-up (in log-probability).

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
        # Checking the argmax alone is cheap; masking the whole vocabulary is not.
        if not grammar.allows(token, self._single):
            token = grammar.best(logits, self._full, self._vocab_ids)
            if token < 0:
                return token, None, None
        shortlist = np.argpartition(logits, -SHORTLIST)[-SHORTLIST:].astype(np.intc)
        if token not in shortlist:
            shortlist = np.append(shortlist, np.intc(token))
        allowed = grammar.allowed_logits(logits, shortlist, self._full[: len(shortlist)])
        allowed = allowed[np.isfinite(allowed)]
        if len(allowed) <= 1:
            return token, None, None
        top = float(allowed.max())
        logprob = float(logits[token]) - top - math.log(float(np.exp(allowed - top).sum()))
        runner_up = float(np.partition(allowed, -2)[-2])
        return token, logprob, float(logits[token]) - runner_up

    def _draft(
        self, grammar: Grammar, out: bytearray, generated: list[int], budget: int, copy_source: str = ""
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

    def _copied_rest(self, text: str, source: str, grammar: Grammar) -> list[int]:
        """A draft for a string value the model is copying from the conversation (ids, emails,
        names): the rest of it as found in ``source``, then, when the whole value was found, its
        closing quote and what follows, as the model wrote them before (else as the schema
        forces them)."""
        typed = open_string_value(text)
        if not typed or not source:
            return []
        rest, whole = copied_value_rest(typed, source)
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
