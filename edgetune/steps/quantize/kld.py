"""What quantization cost, measured by llama.cpp on the user's held-out rows.

For each GGUF against the unquantized (F16) reference file, over the same held-out rows the
importance matrix never saw (llama-perplexity --kl-divergence's definitions):
  mean / p99 KLD   KL(P_ref || P_file) of the next-token distributions, sum_v p_ref (log p_ref - log p_file),
                   over every next-token position of every row
  top-1 agreement  share of those positions where both files' most likely token is the same
  delta ppl        perplexity on the held-out responses, file minus reference
  accuracy         exact match of greedy answers with the dataset's answers
and "did the fine-tune survive": the share of the fine-tune's perplexity gain this file keeps,
(ppl_base - ppl_file) / (ppl_base - ppl_finetuned); a file that gives back more than 10% is flagged.

The reference's log-probabilities are kept in memory as float32 (exact: a file against itself
is 0); the held-out rows (edgetune.heldout) are already as many as fit in LOGPROB_BYTES.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune.errors import EdgetuneError
from edgetune.inputs import gguf_io
from edgetune.measure import gguf_eval, metrics
from edgetune.measure.heldout import LOGPROB_BYTES, Heldout
from edgetune.results import LogitCheck

GAIN_LOSS_FLAG = 0.10  # a file that gives back more than this share of the fine-tune's gain is flagged


@dataclass
class FileReference:
    path: str
    logprobs: list[np.ndarray]  # per row [len - 1, n_vocab] float32
    perplexity: float
    accuracy: float | None
    answers: list[str]
    positions: int
    stopped_at_eos: int = 0  # of its answers, how many stopped on an end-of-generation token
    logit_check: LogitCheck | None = None  # against the HF model's logits, when given them


def reference(path: str | Path, rows: Heldout, max_tokens: int = 32, threads: int = 0,
              hf_logits: list[np.ndarray] | None = None) -> FileReference:
    """The reference file's log-probabilities (as many rows as fit LOGPROB_BYTES), perplexity and answers;
    given the HF model's logits of the first rows, its LogitCheck against them too."""
    if not rows.ids:
        raise EdgetuneError(f"{path}: no held-out rows to measure quantization on (data.eval_split is 0?)")
    tally = gguf_eval.LogitTally(hf_logits) if hf_logits else None
    llm = gguf_eval.load(path, gguf_eval.n_ctx(rows.ids + rows.prompts, max_tokens), threads)
    try:
        logprobs, used = [], 0
        for ids, mask in zip(rows.ids, rows.masks):
            lp = gguf_eval.logprobs(llm, ids, tally, mask)
            if logprobs and used + lp.nbytes > LOGPROB_BYTES:
                break
            logprobs.append(lp)
            used += lp.nbytes
        answers, stopped = gguf_eval.answers(llm, rows.prompts, max_tokens)
    finally:
        llm.close()
    n = len(logprobs)
    return FileReference(str(path), logprobs, metrics.perplexity(logprobs, rows.ids[:n], rows.masks[:n]),
                         metrics.accuracy(answers, rows.expected), answers, sum(len(lp) for lp in logprobs), stopped,
                         _checked(tally, path))


@dataclass
class Measure:
    """One file against the reference on the held-out rows."""

    mean_kld: float
    p99_kld: float
    top1: float  # share of positions whose most likely token is the reference's
    positions: int
    perplexity: float
    delta_ppl: float  # file minus reference
    accuracy: float | None
    answers: list[str]
    stopped_at_eos: int = 0
    logit_check: LogitCheck | None = None


def measure(path: str | Path, ref: FileReference, rows: Heldout, max_tokens: int = 32, threads: int = 0,
            hf_logits: list[np.ndarray] | None = None) -> Measure:
    """KLD, top-1 agreement, perplexity and accuracy of one file against the reference; given the HF
    model's logits of the first rows, its LogitCheck against them too."""
    tally = gguf_eval.LogitTally(hf_logits) if hf_logits else None
    llm = gguf_eval.load(path, gguf_eval.n_ctx(rows.ids + rows.prompts, max_tokens), threads)
    try:
        klds, same, nlls, counts = [], 0, [], []
        for ref_lp, ids, mask in zip(ref.logprobs, rows.ids, rows.masks):
            lp = gguf_eval.logprobs(llm, ids, tally, mask)  # a row's log-probabilities are not kept past it
            klds.append(metrics.kld(ref_lp, lp))
            same += metrics.top1_same(ref_lp, lp)
            nll, n = metrics.nll(lp, ids, mask)
            nlls.append(nll)
            counts.append(n)
        answers, stopped = gguf_eval.answers(llm, rows.prompts, max_tokens)
    finally:
        llm.close()
    k = np.concatenate(klds) if klds else np.zeros(0)
    ppl = metrics.perplexity_of(nlls, counts)
    return Measure(mean_kld=float(k.mean()) if k.size else float("nan"),
                   p99_kld=float(np.percentile(k, 99)) if k.size else float("nan"),
                   top1=same / max(k.size, 1), positions=int(k.size), perplexity=ppl,
                   delta_ppl=ppl - ref.perplexity, accuracy=metrics.accuracy(answers, rows.expected), answers=answers,
                   stopped_at_eos=stopped, logit_check=_checked(tally, path))


def _checked(tally: gguf_eval.LogitTally | None, path: str | Path) -> LogitCheck | None:
    return dataclasses.replace(tally.check(), stamp=gguf_io.stamp(path)) if tally else None


def gain_kept(ppl_base: float | None, ppl_finetuned: float, ppl_file: float) -> float | None:
    """Share of the fine-tune's gain a file keeps (1 = all of it, 0 = back to the base), in loss
    (log-perplexity): a fine-tune from 5,000,000 to 2,857 whose file reads 74,500 kept 56% of what
    training taught, not the 99% a ratio of perplexities says. None when the fine-tune gained nothing."""
    if ppl_base is None or not math.isfinite(ppl_base) or ppl_base - ppl_finetuned <= 1e-9:
        return None
    gained = math.log(ppl_base) - math.log(ppl_finetuned)
    return (math.log(ppl_base) - math.log(ppl_file)) / gained if gained > 1e-9 else None


def gave_back(kept: float | None) -> bool:
    return kept is not None and kept < 1 - GAIN_LOSS_FLAG
