"""Every figure edgetune reports about a model's outputs, defined once (numpy only).

  log_softmax   next-token log-probabilities from logits, in float64 for the sum, kept as float32
  kld           per position KL(P_ref || P) = sum_v p_ref (log p_ref - log p), llama-perplexity's definition
  perplexity    exp(mean NLL) of the next token over the masked positions (the responses)
  nmse          sum (ours - ref)^2 / sum ref^2 over every logit
  accuracy      exact-match share of answers against the dataset's (None when there is nothing to match)

Log-probabilities of a row of n tokens are [n - 1, vocab]: position i predicts token i + 1.
"""
from __future__ import annotations

import math

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return (x - np.log(np.exp(x).sum(-1, keepdims=True))).astype(np.float32)


def kld(ref_logprobs: np.ndarray, logprobs: np.ndarray) -> np.ndarray:
    p = np.exp(ref_logprobs.astype(np.float64))
    return (p * (ref_logprobs.astype(np.float64) - logprobs)).sum(-1)


def top1_same(ref_logprobs: np.ndarray, logprobs: np.ndarray) -> int:
    """How many positions have the same most likely token under both."""
    return int((ref_logprobs.argmax(-1) == logprobs.argmax(-1)).sum())


def perplexity(logprobs: list[np.ndarray], ids: list[list[int]], masks: list[list[int]] | None = None) -> float:
    """Over the positions whose *predicted* token is masked 1 (every position when `masks` is None);
    nan when there are none. A row's log-probabilities may be shorter than the row (a capped reference)."""
    nll, n = 0.0, 0
    for k, (lp, seq) in enumerate(zip(logprobs, ids)):
        m = len(lp)
        keep = np.array(masks[k][1: m + 1], dtype=bool) if masks is not None else np.ones(m, dtype=bool)
        token_lp = lp[np.arange(m), seq[1: m + 1]]
        nll -= float(token_lp[keep].astype(np.float64).sum())
        n += int(keep.sum())
    return math.exp(nll / n) if n else float("nan")


def nmse(ours: list[np.ndarray], ref: list[np.ndarray]) -> float:
    num = sum(float(((a.astype(np.float64) - b) ** 2).sum()) for a, b in zip(ours, ref))
    den = sum(float((b.astype(np.float64) ** 2).sum()) for b in ref)
    return num / max(den, 1e-30)


def accuracy(answers: list[str], expected: list[str]) -> float | None:
    return sum(a == b for a, b in zip(answers, expected)) / len(expected) if expected else None
