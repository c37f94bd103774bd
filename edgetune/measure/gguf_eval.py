"""A GGUF file in llama.cpp (through llama-cpp-python) on the held-out rows: its log-probabilities,
its greedy answers and where they stop, its speed. The llama.cpp side of what hf_eval does for a
Hugging Face model; the quantize step (kld) and the smoke step read every file through here."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import edgetune.threads as threads_mod
from edgetune.errors import EdgetuneError
from edgetune.inputs import gguf_io
from edgetune.inputs.gguf_io import check_gguf_file
from edgetune.measure import metrics
from edgetune.results import LogitCheck


def load(path: str | Path, n_ctx: int, threads: int = 0):
    """The file in llama.cpp with logits at every position, after a clear check that it is a GGUF."""
    from llama_cpp import Llama

    check_gguf_file(Path(path))
    return Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False, seed=0,
                 n_threads=threads_mod.resolve(threads), n_batch=min(512, n_ctx))


_eog: dict[tuple, list[int]] = {}


def eog_ids(path: str | Path) -> list[int]:
    """Every token llama.cpp ends generation on in the file: its EOS and EOT, and tokens it adds by
    name (a Qwen-style vocabulary's <|endoftext|> beside <|im_end|>). Every consumer stops there.
    Read once per file while it is unchanged (the quantize step, the Modelfile and the smoke step ask)."""
    import llama_cpp

    path = Path(path)
    check_gguf_file(path)
    key = (str(path.resolve()), gguf_io.stamp(path))
    if key not in _eog:
        llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        try:
            vocab = llm._model.vocab
            _eog[key] = [t for t in range(llama_cpp.llama_vocab_n_tokens(vocab))
                         if llama_cpp.llama_vocab_is_eog(vocab, t)]
        finally:
            llm.close()
    return list(_eog[key])


def n_ctx(rows: list[list[int]], max_tokens: int) -> int:
    """A context that holds the longest row or prompt and an answer."""
    return max([len(r) for r in rows] + [64]) + max_tokens + 8


def logits(llm, ids: list[int]) -> np.ndarray:
    """[len(ids), vocab] float32 logits of one row."""
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def logprobs(llm, ids: list[int], tally: LogitTally | None = None, mask: list[int] | None = None) -> np.ndarray:
    """[len(ids) - 1, vocab] next-token log-probabilities of one row; its whole-row logits go to
    `tally` first (with the row's response mask) when it wants the row."""
    t0 = time.perf_counter()
    lg = logits(llm, ids)
    if tally is not None and tally.wants():
        tally.add(lg, ids, mask, time.perf_counter() - t0)
    if not np.isfinite(lg).all():
        raise EdgetuneError("logits are not finite")
    return metrics.log_softmax(lg[:-1], inplace=True)


@dataclass
class LogitTally:
    """A file's whole-row logits on the first rows against the HF model's logits of those rows, taken
    row by row (no row is kept): the smoke test's logit figures, as a LogitCheck."""

    hf_logits: list[np.ndarray]
    finite: bool = True
    squared_error: float = 0.0
    squared_ref: float = 0.0
    nll: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0

    def wants(self) -> bool:
        return len(self.counts) < len(self.hf_logits)

    def add(self, logits: np.ndarray, ids: list[int], mask: list[int], seconds: float) -> None:
        """The next row: its logits ([len(ids), vocab]) and the seconds they took to evaluate."""
        hf = self.hf_logits[len(self.counts)]
        self.tokens += len(ids)
        self.seconds += seconds
        if not np.isfinite(logits).all():
            self.finite = False
            self.counts.append(0)
            return
        err, ref = metrics.nmse_terms(logits, hf)
        self.squared_error += err
        self.squared_ref += ref
        nll, n = metrics.response_nll(logits, ids, mask)
        self.nll.append(nll)
        self.counts.append(n)

    def check(self) -> LogitCheck:
        finite = self.finite
        return LogitCheck(rows=len(self.counts), finite=finite,
                          nmse=self.squared_error / max(self.squared_ref, 1e-30) if finite else math.inf,
                          perplexity=metrics.perplexity_of(self.nll, self.counts) if finite else math.inf,
                          prompt_tokens_per_s=self.tokens / self.seconds if self.seconds > 0 else None)


@contextlib.contextmanager
def last_logits_only(llm):
    """While generating, llama.cpp computes the logits of the last position only, as its consumers
    run a prompt: a file loaded with logits at every position (`load`) otherwise runs the output layer
    over every prompt token, most of a prompt's cost on a 262k-token vocabulary. llama-cpp-python
    reads the flag at each eval (its sampler reads the last logits either way)."""
    saved = getattr(llm, "_logits_all", None)  # a private flag: a version without it runs as before
    if saved is not None:
        llm._logits_all = False
    try:
        yield llm
    finally:
        if saved is not None:
            llm._logits_all = saved


def greedy(llm, ids: list[int], max_tokens: int) -> tuple[str, int | None, bool]:
    """(answer text, last token, stopped on an end-of-generation token) of greedy decoding."""
    import llama_cpp

    llm.reset()
    out: list[int] = []
    with last_logits_only(llm):
        for token in llm.generate(ids, top_k=1, temp=0.0, reset=True):
            out.append(int(token))
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token) or len(out) >= max_tokens:
                break
    eog = bool(out) and llama_cpp.llama_vocab_is_eog(llm._model.vocab, out[-1])
    # Bytes that do not form UTF-8 are dropped, as llama-cpp-python's completion drops them.
    text = llm.detokenize(out[:-1] if eog else out).decode("utf-8", errors="ignore")
    return text.strip(), (out[-1] if out else None), eog


def answers(llm, prompts: list[list[int]], max_tokens: int) -> tuple[list[str], int]:
    """Greedy answers to every prompt, and how many stopped on an end-of-generation token."""
    done = [greedy(llm, ids, max_tokens) for ids in prompts]
    return [text for text, _, _ in done], sum(eog for _, _, eog in done)


def generation_speed(llm, prompt: list[int], n_tokens: int = 32) -> float:
    """Decode tokens/s over exactly `n_tokens` greedy steps after `prompt` (EOS does not stop it,
    so short answers do not turn the figure into a measure of prompt evaluation)."""
    llm.reset()
    llm.eval(prompt)
    t0 = time.perf_counter()
    for _ in range(n_tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        llm.eval([token])
    return n_tokens / (time.perf_counter() - t0)
