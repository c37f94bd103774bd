"""Every figure edgetune reports about a model's outputs, defined once (numpy only).

  log_softmax   next-token log-probabilities from logits (float32, sums in float64)
  kld           per position KL(P_ref || P) = sum_v p_ref (log p_ref - log p), llama-perplexity's definition
  perplexity    exp(mean NLL) of the next token over the masked positions (the responses);
                response_nll takes it from raw logits, the log-softmax only where it counts
  nmse          sum (ours - ref)^2 / sum ref^2 over every logit
  accuracy      exact-match share of answers against the dataset's (None when there is nothing to match)

Log-probabilities of a row of n tokens are [n - 1, vocab]: position i predicts token i + 1.
"""
from __future__ import annotations

import math

import numpy as np

CHUNK_VALUES = 1 << 18  # positions are taken a few at a time, their temporaries small enough to stay in cache


def _chunks(n_positions: int, vocab: int):
    step = max(1, CHUNK_VALUES // max(vocab, 1))
    return (slice(i, i + step) for i in range(0, n_positions, step))


def log_softmax(logits: np.ndarray, inplace: bool = False) -> np.ndarray:
    """float32 throughout, the sums accumulated in float64: 4-8x faster than a float64 copy of a
    262k-token vocabulary's logits, within 4e-6 of it. `inplace`: overwrite `logits` (float32) instead
    of copying them (a 262k-token row of 34 positions is 36 MB). Each position's figures do not depend
    on how many are taken at once."""
    x = logits if inplace and logits.dtype == np.float32 else logits.astype(np.float32, copy=True)
    if x.ndim < 2:
        x -= x.max(-1, keepdims=True)
        x -= np.log(np.exp(x).sum(-1, keepdims=True, dtype=np.float64)).astype(np.float32)
        return x
    flat = x.reshape(-1, x.shape[-1])
    for at in _chunks(len(flat), flat.shape[-1]):
        part = flat[at]
        part -= part.max(-1, keepdims=True)
        part -= np.log(np.exp(part).sum(-1, keepdims=True, dtype=np.float64)).astype(np.float32)
    return x


def kld(ref_logprobs: np.ndarray, logprobs: np.ndarray) -> np.ndarray:
    """Per position KL(P_ref || P) from two [positions, vocab] log-probability arrays (float64)."""
    out = np.empty(len(ref_logprobs))
    for at in _chunks(len(ref_logprobs), ref_logprobs.shape[-1]):
        ref = ref_logprobs[at]
        p = np.exp(ref)
        p *= ref - logprobs[at]
        out[at] = p.sum(-1, dtype=np.float64)
    return out


def top1_same(ref_logprobs: np.ndarray, logprobs: np.ndarray) -> int:
    """How many positions have the same most likely token under both."""
    return int((ref_logprobs.argmax(-1) == logprobs.argmax(-1)).sum())


def nll(logprobs: np.ndarray, ids: list[int], mask: list[int] | None = None) -> tuple[float, int]:
    """Summed NLL of one row's next tokens at the positions whose *predicted* token is masked 1 (every
    position when `mask` is None), and how many there are. The log-probabilities may be shorter than
    the row (a capped reference)."""
    m = len(logprobs)
    keep = np.array(mask[1: m + 1], dtype=bool) if mask is not None else np.ones(m, dtype=bool)
    token_lp = logprobs[np.arange(m), ids[1: m + 1]]
    return -float(token_lp[keep].astype(np.float64).sum()), int(keep.sum())


def response_nll(logits: np.ndarray, ids: list[int], mask: list[int]) -> tuple[float, int]:
    """nll(log_softmax(logits[:-1]), ids, mask) from a row's raw logits, the log-softmax taken only at
    the masked positions (its cost is the vocabulary times the positions: 262k on Gemma)."""
    m = min(len(logits), len(ids)) - 1
    keep = np.flatnonzero(np.array(mask[1: m + 1], dtype=bool))
    if not keep.size:
        return 0.0, 0
    return target_nll(logits[keep], np.asarray(ids)[keep + 1]), int(keep.size)


def target_nll(logits: np.ndarray, targets: np.ndarray) -> float:
    """Summed NLL of `targets` (one per row of `logits`) under the log-softmax of those logits."""
    lp = log_softmax(logits)
    return -float(lp[np.arange(len(targets)), targets].astype(np.float64).sum())


def perplexity_of(nlls: list[float], counts: list[int]) -> float:
    """exp(mean NLL) from per-row sums and counts; nan when there are no positions."""
    n = sum(counts)
    return math.exp(sum(nlls) / n) if n else float("nan")


def perplexity(logprobs: list[np.ndarray], ids: list[list[int]], masks: list[list[int]] | None = None) -> float:
    rows = [nll(lp, seq, masks[k] if masks is not None else None) for k, (lp, seq) in enumerate(zip(logprobs, ids))]
    return perplexity_of([r[0] for r in rows], [r[1] for r in rows])


def logits_perplexity(logits: list[np.ndarray], ids: list[list[int]], masks: list[list[int]] | None = None) -> float:
    """Response perplexity from whole-row logits ([len(row), vocab]: the last predicts past the row);
    every next token when `masks` is None."""
    if masks is None:
        return perplexity([log_softmax(lg[: len(seq) - 1]) for lg, seq in zip(logits, ids)], ids)
    rows = [response_nll(lg, seq, mask) for lg, seq, mask in zip(logits, ids, masks)]
    return perplexity_of([r[0] for r in rows], [r[1] for r in rows])


def nmse(ours: list[np.ndarray], ref: list[np.ndarray]) -> float:
    terms = [nmse_terms(a, b) for a, b in zip(ours, ref)]
    return sum(t[0] for t in terms) / max(sum(t[1] for t in terms), 1e-30)


def nmse_terms(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(sum (ours - ref)^2, sum ref^2) of one row, in float64: nmse over rows is their sums' ratio."""
    return float(((ours.astype(np.float64) - ref) ** 2).sum()), float((ref.astype(np.float64) ** 2).sum())


def accuracy(answers: list[str], expected: list[str]) -> float | None:
    return sum(a == b for a, b in zip(answers, expected)) / len(expected) if expected else None
