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
is 0); rows are taken until REF_BYTES would be exceeded, which for a 262k-token vocabulary is
about a thousand positions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetune import threads as threads_mod
from edgetune.data import tokenize
from edgetune.errors import EdgetuneError
from edgetune.gguf_io import check_gguf_file
from edgetune.models import load_causal_lm
from edgetune.smoke import hf_generate

REF_BYTES = 1 << 30  # reference log-probabilities kept in memory
GAIN_LOSS_FLAG = 0.10  # a file that gives back more than this share of the fine-tune's gain is flagged


@dataclass
class Heldout:
    """Held-out rows as token ids: whole rows for KLD, response masks for perplexity, prompts for answers."""

    ids: list[list[int]]
    masks: list[list[int]]
    prompts: list[list[int]] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)


@dataclass
class Reference:
    path: str
    logprobs: list[np.ndarray]  # per row [len - 1, n_vocab] float32
    perplexity: float
    accuracy: float | None
    answers: list[str]
    positions: int


def heldout(examples, tokenizer, max_length: int, n_prompts: int) -> Heldout:
    """Token ids of the held-out examples, tokenized as in training (BOS, EOS, truncation)."""

    rows = [r for r in tokenize(examples, tokenizer, max_length, completion_only=True) if len(r["input_ids"]) > 1]
    prompted = [e for e in examples if e.prompt][:n_prompts]
    # The template writes BOS into the prompt text where the model uses one: no special tokens added.
    prompts = [tokenizer(e.prompt, add_special_tokens=False)["input_ids"] for e in prompted]
    expected = [(e.answer or e.completion).strip() for e in prompted]
    return Heldout([r["input_ids"] for r in rows], [r["completion_mask"] for r in rows], prompts, expected)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return (x - np.log(np.exp(x).sum(-1, keepdims=True))).astype(np.float32)


def kld(ref_logprobs: np.ndarray, logprobs: np.ndarray) -> np.ndarray:
    """Per position KL(P_ref || P): sum_v p_ref * (log p_ref - log p)."""
    p = np.exp(ref_logprobs.astype(np.float64))
    return (p * (ref_logprobs.astype(np.float64) - logprobs)).sum(-1)


def _perplexity(logprobs: list[np.ndarray], ids: list[list[int]], masks: list[list[int]]) -> float:
    nll, n = 0.0, 0
    for lp, seq, mask in zip(logprobs, ids, masks):
        keep = np.array(mask[1: len(lp) + 1], dtype=bool)
        token_lp = lp[np.arange(len(lp)), seq[1: len(lp) + 1]]
        nll -= float(token_lp[keep].sum())
        n += int(keep.sum())
    return math.exp(nll / n) if n else float("nan")


class _File:
    """One GGUF loaded in llama.cpp, evaluated row by row."""

    def __init__(self, path: str | Path, n_ctx: int, threads: int):
        from llama_cpp import Llama


        check_gguf_file(Path(path))
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False, seed=0,
                         n_threads=threads_mod.resolve(threads), n_batch=min(512, n_ctx))

    def logprobs(self, ids: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(ids)
        logits = np.array(self.llm.scores[: len(ids) - 1], dtype=np.float32)
        if not np.isfinite(logits).all():
            raise EdgetuneError("logits are not finite")
        return _log_softmax(logits)

    def answers(self, prompts: list[list[int]], max_tokens: int) -> list[str]:
        out = []
        for ids in prompts:
            self.llm.reset()
            text = self.llm.create_completion(ids, max_tokens=max_tokens, temperature=0.0, top_k=1)["choices"][0]["text"]
            out.append(text.strip())
        return out

    def close(self) -> None:
        self.llm.close()


def _n_ctx(rows: Heldout, max_tokens: int) -> int:
    return max([len(r) for r in rows.ids + rows.prompts] + [16]) + max_tokens + 8


def _accuracy(answers: list[str], expected: list[str]) -> float | None:
    return sum(a == b for a, b in zip(answers, expected)) / len(expected) if expected else None


def reference(path: str | Path, rows: Heldout, max_tokens: int = 32, threads: int = 0) -> Reference:
    """The reference file's log-probabilities (as many rows as fit REF_BYTES), perplexity and answers."""
    if not rows.ids:
        raise EdgetuneError(f"{path}: no held-out rows to measure quantization on (data.eval_split is 0?)")
    f = _File(path, _n_ctx(rows, max_tokens), threads)
    try:
        logprobs, used = [], 0
        for ids in rows.ids:
            lp = f.logprobs(ids)
            if logprobs and used + lp.nbytes > REF_BYTES:
                break
            logprobs.append(lp)
            used += lp.nbytes
        answers = f.answers(rows.prompts, max_tokens)
    finally:
        f.close()
    n = len(logprobs)
    return Reference(str(path), logprobs, _perplexity(logprobs, rows.ids[:n], rows.masks[:n]),
                     _accuracy(answers, rows.expected), answers, sum(len(lp) for lp in logprobs))


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


def measure(path: str | Path, ref: Reference, rows: Heldout, max_tokens: int = 32, threads: int = 0) -> Measure:
    """KLD, top-1 agreement, perplexity and accuracy of one file against the reference."""
    f = _File(path, _n_ctx(rows, max_tokens), threads)
    try:
        klds, same, logprobs = [], 0, []
        for ref_lp, ids in zip(ref.logprobs, rows.ids):
            lp = f.logprobs(ids)
            logprobs.append(lp)
            klds.append(kld(ref_lp, lp))
            same += int((ref_lp.argmax(-1) == lp.argmax(-1)).sum())
        answers = f.answers(rows.prompts, max_tokens)
    finally:
        f.close()
    k = np.concatenate(klds) if klds else np.zeros(0)
    ppl = _perplexity(logprobs, rows.ids[: len(logprobs)], rows.masks[: len(logprobs)])
    return Measure(mean_kld=float(k.mean()) if k.size else float("nan"),
                   p99_kld=float(np.percentile(k, 99)) if k.size else float("nan"),
                   top1=same / max(k.size, 1), positions=int(k.size), perplexity=ppl,
                   delta_ppl=ppl - ref.perplexity, accuracy=_accuracy(answers, rows.expected), answers=answers)


def hf_base(model_dir: str | Path, rows: Heldout, tok, stop_ids: list[int], max_tokens: int = 32) -> tuple[float, float | None]:
    """Perplexity and accuracy of an HF model (the base before fine-tuning) on the held-out rows;
    greedy answers stop where the fine-tuned model's do (EOS and the template's turn end)."""
    import torch

    model = load_causal_lm(model_dir, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        logprobs = [_log_softmax(model(torch.tensor([ids])).logits[0, :-1].float().numpy()) for ids in rows.ids]
    answers = [hf_generate(model, tok, ids, max_tokens, stop_ids) for ids in rows.prompts]
    del model
    return _perplexity(logprobs, rows.ids, rows.masks), _accuracy(answers, rows.expected)


def gain_kept(ppl_base: float | None, ppl_finetuned: float, ppl_file: float) -> float | None:
    """Share of the fine-tune's perplexity gain a file keeps (1 = all of it, 0 = back to the base);
    None when the fine-tune gained nothing to keep."""
    if ppl_base is None or not math.isfinite(ppl_base) or ppl_base - ppl_finetuned <= 1e-9:
        return None
    return (ppl_base - ppl_file) / (ppl_base - ppl_finetuned)


def gave_back(kept: float | None) -> bool:
    return kept is not None and kept < 1 - GAIN_LOSS_FLAG
