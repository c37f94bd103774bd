"""A Hugging Face model (the base, or the merged fine-tune) on the held-out rows: its greedy answers,
where its generation stops, and its log-probabilities. The base's figures are computed once per run
(by the quantize step, which needs them first) and read back by the smoke step."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetune import metrics
from edgetune.heldout import Heldout
from edgetune.models import load_causal_lm
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


def folder_stop_ids(model_dir: str | Path, tok) -> list[int]:
    """stop_ids from a model folder's generation_config.json (the tokenizer's EOS without one)."""
    from transformers import GenerationConfig

    has_config = (Path(model_dir) / "generation_config.json").is_file()
    return stop_ids(GenerationConfig.from_pretrained(str(model_dir)) if has_config else None, tok)


def chat_ids(tok, messages: list[dict]) -> list[int]:
    """What HF's own chat path feeds the model for `messages`."""
    out = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


def answer(model, tok, ids: list[int], max_tokens: int, stops: list[int] | None = None) -> tuple[str, bool]:
    """The greedy answer to prompt `ids`, and whether it ended on a stop token."""
    import torch

    stops = stops or stop_ids(model.generation_config, tok)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False,
                             eos_token_id=stops, pad_token_id=tok.pad_token_id or stops[0])
    new = out[0][len(ids):].tolist()
    return tok.decode(new, skip_special_tokens=True).strip(), bool(new) and new[-1] in stops


def answers(model, tok, prompts: list[list[int]], max_tokens: int, stops: list[int]) -> tuple[list[str], int]:
    """Greedy answers to every prompt, and how many ended on a stop token."""
    done = [answer(model, tok, ids, max_tokens, stops) for ids in prompts]
    return [text for text, _ in done], sum(stopped for _, stopped in done)


def logits(model, ids: list[int]) -> np.ndarray:
    """[len(ids), vocab] float32 logits of one row."""
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def base_figures(model_dir: str | Path, rows: Heldout, tok, stops: list[int], max_tokens: int) -> BaseFigures:
    """The base model before fine-tuning on the run's held-out rows; its answers stop where the
    fine-tuned model's do (EOS and the template's turn end)."""
    model = load(model_dir)
    try:
        nll, tokens = [], []
        for ids, mask in zip(rows.ids, rows.masks):
            total, n = metrics.nll(metrics.log_softmax(logits(model, ids)[:-1]), ids, mask)
            nll.append(total)
            tokens.append(n)
        texts, stopped = answers(model, tok, rows.prompts, max_tokens, stops)
    finally:
        del model
    return BaseFigures(perplexity=metrics.perplexity_of(nll, tokens),
                       accuracy=metrics.accuracy(texts, rows.expected), answers=texts, stopped_at_eos=stopped,
                       row_nll=nll, row_tokens=tokens)
