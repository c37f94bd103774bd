"""A Hugging Face model (the base, or the merged fine-tune) on the held-out rows: its greedy answers,
where its generation stops, and its log-probabilities. The base's figures are computed once per run
(by the quantize step, which needs them first) and read back by the smoke step."""
from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune.inputs.models import load_causal_lm
from edgetune.measure import gguf_eval, metrics
from edgetune.measure.heldout import Heldout
from edgetune.results import BaseFigures


def load(model_dir: str | Path):
    """The model in fp32, in eval mode (measurements are made in fp32 whatever training used)."""
    import torch

    model = load_causal_lm(model_dir, dtype=torch.float32)
    model.eval()
    return model


def stop_ids(generation_config, tok) -> list[int]:
    """What generation stops on: the generation config's EOS ids (EOS and the template's turn end)."""
    eos = generation_config.eos_token_id if generation_config is not None else None
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    return ids or ([tok.eos_token_id] if tok.eos_token_id is not None else [])


def folder_stop_ids(model_dir: str | Path, tok, gguf_file: str | Path | None = None) -> list[int]:
    """stop_ids from a model folder's generation_config.json (the tokenizer's EOS without one) and,
    given the run's GGUF, every token llama.cpp ends generation on there: HF answers then end where
    the file's consumers end them (a model that emits <|endoftext|> instead of <|im_end|> stops in
    llama.cpp and Ollama, and must stop here too, or the two sides never agree)."""
    from transformers import GenerationConfig

    has_config = (Path(model_dir) / "generation_config.json").is_file()
    ids = stop_ids(GenerationConfig.from_pretrained(str(model_dir)) if has_config else None, tok)
    if gguf_file is not None:
        ids += [t for t in gguf_eval.eog_ids(gguf_file) if t not in ids and t < len(tok)]
    return ids


def chat_ids(tok, messages: list[dict]) -> list[int]:
    """What HF's own chat path feeds the model for `messages`."""
    out = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


BATCH_LOGIT_BYTES = 512 * 2**20  # the [batch, length, vocab] float32 logits of one forward stay under this


def _batches(rows: list[list[int]], vocab: int | None = None, limit: int = 8) -> list[list[int]]:
    """Indices of `rows` in batches of similar length (longest first), each at most `limit` rows and,
    given the vocabulary, BATCH_LOGIT_BYTES of logits: one forward of eight rows costs little more than
    one of a single row on a CPU, where a small model's time goes to the work around each matmul."""
    def fits(batch: list[int]) -> bool:
        return vocab is None or (len(batch) + 1) * len(rows[batch[0]]) * vocab * 4 <= BATCH_LOGIT_BYTES

    out: list[list[int]] = []
    for i in sorted(range(len(rows)), key=lambda i: -len(rows[i])):
        if out and len(out[-1]) < limit and fits(out[-1]):
            out[-1].append(i)
        else:
            out.append([i])
    return out


def answers(model, tok, prompts: list[list[int]], max_tokens: int, stops: list[int]) -> tuple[list[str], int]:
    """Greedy answers to every prompt, and how many ended on a stop token. The prompts are generated
    together, padded on the left (the same answers as one at a time, 4x faster for 8 prompts on Gemma 3 270M)."""
    import torch

    pad = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    texts: list[str] = [""] * len(prompts)
    stopped = 0
    for batch in _batches(prompts):
        width = max(len(prompts[i]) for i in batch)
        ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in batch])
        mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in batch])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=max_tokens, do_sample=False,
                                 eos_token_id=stops, pad_token_id=pad)
        for i, new in zip(batch, out[:, width:].tolist()):
            end = next((k for k, t in enumerate(new) if t in stops), None)
            stopped += end is not None
            # Decoded as generate returned it alone: up to and with its stop token, special tokens skipped.
            texts[i] = tok.decode(new if end is None else new[: end + 1], skip_special_tokens=True).strip()
    return texts, stopped


def logits(model, rows: list[list[int]]) -> list[np.ndarray]:
    """Per row, its [len(row), vocab] float32 logits; the rows run in batches, padded on the right."""
    import torch

    vocab = model.get_output_embeddings().weight.shape[0]
    out: list[np.ndarray] = [np.zeros(0)] * len(rows)
    for batch in _batches(rows, vocab):
        width = len(rows[batch[0]])
        ids = torch.tensor([rows[i] + [0] * (width - len(rows[i])) for i in batch])
        mask = torch.tensor([[1] * len(rows[i]) + [0] * (width - len(rows[i])) for i in batch])
        with torch.no_grad():
            lg = model(ids, attention_mask=mask).logits.float().numpy()
        for k, i in enumerate(batch):
            out[i] = lg[k, : len(rows[i])].copy()
    return out


def response_nlls(model, rows: list[list[int]], masks: list[list[int]]) -> tuple[list[float], list[int]]:
    """Per row, metrics.response_nll of its logits: the summed NLL of its response tokens and how many.
    The rows run in the batches `logits` runs them in, but the output layer is applied only at the
    positions that predict a response token: on Gemma's 262k-token vocabulary it was most of the forward."""
    import torch

    vocab = model.get_output_embeddings().weight.shape[0]
    nll, tokens = [0.0] * len(rows), [0] * len(rows)
    for batch in _batches(rows, vocab):
        width = len(rows[batch[0]])
        wanted = {i: [t for t in range(len(rows[i]) - 1) if masks[i][t + 1]] for i in batch}
        keep = sorted({t for positions in wanted.values() for t in positions})
        if not keep:
            continue
        ids = torch.tensor([rows[i] + [0] * (width - len(rows[i])) for i in batch])
        mask = torch.tensor([[1] * len(rows[i]) + [0] * (width - len(rows[i])) for i in batch])
        with torch.no_grad():
            lg = model(ids, attention_mask=mask, logits_to_keep=torch.tensor(keep)).logits.float().numpy()
        column = {t: k for k, t in enumerate(keep)}
        for k, i in enumerate(batch):
            at = [column[t] for t in wanted[i]]
            if at:
                nll[i] = metrics.target_nll(lg[k, at], np.asarray(rows[i])[np.asarray(wanted[i]) + 1])
                tokens[i] = len(at)
    return nll, tokens


@dataclass
class Outputs:
    """An HF model on held-out rows: its greedy answers to the prompts (and how many ended on a stop
    token), its whole-row logits and the response perplexity they give."""

    answers: list[str]
    stopped: int
    logits: list[np.ndarray]  # per row [len(row), vocab] float32
    perplexity: float


def outputs(model, tok, rows: Heldout, max_tokens: int, stops: list[int]) -> Outputs:
    texts, stopped = answers(model, tok, rows.prompts, max_tokens, stops)
    lg = logits(model, rows.ids)
    return Outputs(texts, stopped, lg, metrics.logits_perplexity(lg, rows.ids, rows.masks))


def base_figures(model_dir: str | Path, rows: Heldout, tok, stops: list[int], max_tokens: int) -> BaseFigures:
    """The base model before fine-tuning on the run's held-out rows; its answers stop where the
    fine-tuned model's do (EOS and the template's turn end)."""
    model = load(model_dir)
    try:
        nll, tokens = response_nlls(model, rows.ids, rows.masks)
        texts, stopped = answers(model, tok, rows.prompts, max_tokens, stops)
    finally:
        del model
        gc.collect()  # an HF model holds reference cycles: its weights would wait for the next collection
    return BaseFigures(perplexity=metrics.perplexity_of(nll, tokens),
                       accuracy=metrics.accuracy(texts, rows.expected), answers=texts, stopped_at_eos=stopped,
                       row_nll=nll, row_tokens=tokens)
