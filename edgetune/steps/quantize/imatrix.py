"""Importance matrix from the user's own training rows, computed on the merged HF model.

llama.cpp weighs each weight's quantization error by how large that weight's input is: for every
matrix it quantizes, the mean of the squared input activation per input column. Its llama-imatrix
tool measures that with its own forward pass over a text file; we measure it with torch forward
hooks over the chat-templated training rows, so the quantizer favours the columns the fine-tune
actually uses.

Which matrices: the blk.* weights llama-imatrix collects by default (the token embedding is a
lookup, not a product; output.weight only with its --process-output). GGUF names come from the
converter's own tensor-name table (edgetune.convert), so they match the file being quantized; a
fused HF matrix the converter writes fused (Phi-3 qkv_proj -> attn_qkv) gets one entry, and a
matrix the converter splits by rows would give every part the same entry (the inputs are shared).
A mixture-of-experts layer's stacked experts (ffn_{gate,up,down}_exps) get one row per expert,
from the tokens the router sent to it, as llama-imatrix collects them.

The file is llama.cpp's imatrix GGUF, readable by `llama-quantize --imatrix`:
  general.type = "imatrix", imatrix.datasets [str], imatrix.chunk_count u32, imatrix.chunk_size u32
  <tensor>.in_sum2  F32 [n_mat][n_cols]  sum over tokens of x_j^2
  <tensor>.counts   F32 [n_mat][1]       tokens seen
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from edgetune.convert import input_order, tensor_name_map
from edgetune.errors import EdgetuneError
from edgetune.events import Callback, CancelToken, Event, ignore
from edgetune.fsutil import atomic_path
from edgetune.inputs.data import tokenize
from edgetune.inputs.models import load_causal_lm

CHUNK_SIZE = 512  # llama-imatrix's default context: what its chunk_count counts
MIN_TOKENS = 2 * CHUNK_SIZE  # fewer tokens than this give column statistics that are mostly noise
BATCH_TOKENS = 4096  # padded tokens per forward batch (bounds activation memory)

KEY_DATASETS = gguf.Keys.IMatrix.DATASETS
KEY_CHUNK_COUNT = gguf.Keys.IMatrix.CHUNK_COUNT
KEY_CHUNK_SIZE = gguf.Keys.IMatrix.CHUNK_SIZE


@dataclass
class Imatrix:
    """Per GGUF tensor name: sum of squared inputs per column ([n_mat, n_cols], float64) and tokens ([n_mat])."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunk_size: int = CHUNK_SIZE
    chunk_count: int = 0

    @property
    def tokens(self) -> int:
        return int(max((c.max() for c in self.counts.values()), default=0))

    def add(self, name: str, sum_sq: np.ndarray, n: int, mat: int = 0, n_mat: int = 1) -> None:
        if name not in self.sums:
            self.sums[name] = np.zeros((n_mat, sum_sq.shape[-1]), dtype=np.float64)
            self.counts[name] = np.zeros(n_mat, dtype=np.float64)
        self.sums[name][mat] += sum_sq
        self.counts[name][mat] += n

    def mean_squares(self) -> dict[str, np.ndarray]:
        """What llama_model_quantize takes per tensor: in_sum2 / count, flattened; 1 where a matrix
        saw no token (llama.cpp's own loader does the same for partial data)."""
        out = {}
        for name, sums in self.sums.items():
            counts = self.counts[name][:, None]
            out[name] = np.where(counts > 0, sums / np.maximum(counts, 1), 1.0).astype(np.float32).reshape(-1)
        return out


# ---------------------------------------------------------------- computing

def hf_targets(model, model_dir) -> dict[str, list[str]]:
    """HF Linear module name -> the GGUF tensor names its weight becomes (blk.* only); an experts
    module (stacked 3-D weights) -> its stacked gate, up and down tensors (ffn_*_exps)."""
    import torch


    to_gguf = tensor_name_map(model_dir)
    targets = {}
    for name, module in model.named_modules():
        if is_experts(module):
            stacked = [to_gguf(f"{name}.0.{p}.weight") for p in ("gate_proj", "up_proj", "down_proj")]
            if all(stacked):
                targets[name] = stacked
            continue
        if not isinstance(module, torch.nn.Linear):
            continue
        gguf_name = to_gguf(f"{name}.weight")
        if gguf_name and gguf_name.startswith("blk."):
            targets[name] = [gguf_name]
    if not targets:
        raise EdgetuneError(f"{model_dir}: no weight matrix maps to a GGUF blk.* tensor; cannot compute an importance matrix")
    return targets


def is_experts(module) -> bool:
    """transformers 5's mixture-of-experts layout: gate_up_proj [experts, 2 x width, hidden] and
    down_proj [experts, hidden, width], called with (hidden states, chosen experts, weights)."""
    gate_up, down = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
    return getattr(gate_up, "dim", lambda: 0)() == 3 and getattr(down, "dim", lambda: 0)() == 3


def add_expert_inputs(result: Imatrix, module, names: list[str], x, chosen) -> None:
    """Per expert, the squared inputs of its gate/up (the tokens routed to it) and of its down
    projection (act(gate) * up of those tokens, recomputed here), as llama.cpp's imatrix keeps them:
    one row per expert of the stacked tensor."""
    import torch
    gate, up, down = names
    n = module.gate_up_proj.shape[0]
    for e in range(n):
        xe = x[(chosen == e).any(-1)]
        if not len(xe):
            continue
        sum_sq = (xe * xe).sum(0).to(torch.float64).numpy()
        result.add(gate, sum_sq, len(xe), e, n)
        result.add(up, sum_sq, len(xe), e, n)
        g, u = (xe @ module.gate_up_proj[e].to(torch.float32).T).chunk(2, dim=-1)
        h = module.act_fn(g) * u
        result.add(down, (h * h).sum(0).to(torch.float64).numpy(), len(xe), e, n)


def collect(model, model_dir, rows: list[list[int]], dataset: str, on_event: Callback = ignore,
            cancel: CancelToken | None = None) -> Imatrix:
    """Run `rows` (token ids, one sequence each, no cross-row attention) through `model` and
    accumulate the squared inputs of every target matrix."""
    import torch

    targets = hf_targets(model, model_dir)
    to_gguf_columns = input_order(model_dir)
    result = Imatrix(datasets=[dataset])
    state: dict = {"keep": None}

    def hook(module_name):
        def pre_hook(module, args):
            x = args[0].detach()
            x = x.reshape(-1, x.shape[-1])
            keep = state["keep"]
            chosen = args[1].reshape(x.shape[0], -1) if is_experts(module) else None
            if keep is not None and keep.numel() == x.shape[0]:
                x = x[keep]  # padding positions are not tokens of the data
                chosen = chosen[keep] if chosen is not None else None
            x = x.to(torch.float32)
            if chosen is not None:
                add_expert_inputs(result, module, targets[module_name], x, chosen)
                return
            sum_sq = to_gguf_columns(f"{module_name}.weight", (x * x).sum(0).to(torch.float64).numpy())
            for gguf_name in targets[module_name]:
                result.add(gguf_name, sum_sq, x.shape[0])
        return pre_hook

    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_pre_hook(hook(name)) for name in targets]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths batch with little padding
    batches, batch = [], []
    for i in order:
        if batch and (len(batch) + 1) * len(rows[i]) > BATCH_TOKENS:
            batches.append(batch)
            batch = []
        batch.append(rows[i])
    if batch:
        batches.append(batch)
    total = sum(len(r) for r in rows)
    on_event(Event("quantize", "start", f"importance matrix: {len(rows)} rows, {total:,} tokens, "
                   f"{len(targets)} matrices", total=len(batches)))
    pad = 0
    t0 = time.time()
    try:
        with torch.no_grad():
            for step, batch in enumerate(batches, 1):
                if cancel is not None:
                    cancel.check()
                width = max(len(r) for r in batch)
                ids = torch.tensor([r + [pad] * (width - len(r)) for r in batch])
                mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in batch])
                state["keep"] = mask.reshape(-1).bool()
                model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
                done = sum(len(r) for b in batches[:step] for r in b)
                elapsed = time.time() - t0
                rate = f", {done / elapsed:.0f} tokens/s" if elapsed > 0 else ""
                on_event(Event("quantize", "progress", f"importance matrix{rate}", step=step, total=len(batches)))
    finally:
        for h in handles:
            h.remove()
    result.chunk_count = math.ceil(result.tokens / result.chunk_size)
    return result


def compute(merged_dir: str | Path, rows: list[list[int]], dataset: str, on_event: Callback = ignore,
            cancel: CancelToken | None = None) -> Imatrix:
    """Load the merged model in fp32 and collect its importance matrix over `rows`."""
    import torch

    model = load_causal_lm(merged_dir, dtype=torch.float32)
    model.eval()
    try:
        return collect(model, merged_dir, rows, dataset, on_event, cancel)
    finally:
        del model
        gc.collect()  # an HF model holds reference cycles: its weights would wait for the next collection


def calibration_rows(examples, tokenizer, max_length: int, max_tokens: int) -> list[list[int]]:
    """Token ids of the chat-templated training rows (prompt and answer, BOS/EOS as in training),
    whole rows in data order until `max_tokens`."""

    rows, total = [], 0
    for row in tokenize(examples, tokenizer, max_length, completion_only=False):
        if total >= max_tokens:
            break
        ids = row["input_ids"][: max_tokens - total]
        if len(ids) > 1:
            rows.append(ids)
            total += len(ids)
    return rows


# ---------------------------------------------------------------- the file

class _Writer(gguf.GGUFWriter):
    def add_architecture(self) -> None:
        pass  # an imatrix file names no architecture


def write(im: Imatrix, path: str | Path) -> Path:
    """The imatrix GGUF, tensors in name order (as llama-imatrix writes them), written temp + rename."""
    path = Path(path)
    if not im.sums:
        raise EdgetuneError(f"{path}: the importance matrix is empty")
    w = _Writer(None, "")
    w.add_type(gguf.GGUFType.IMATRIX)
    w.add_array(KEY_DATASETS, list(im.datasets) or [""])
    w.add_uint32(KEY_CHUNK_COUNT, int(im.chunk_count))
    w.add_uint32(KEY_CHUNK_SIZE, int(im.chunk_size))
    for name in sorted(im.sums):
        w.add_tensor(f"{name}.in_sum2", im.sums[name].astype(np.float32))
        w.add_tensor(f"{name}.counts", im.counts[name].astype(np.float32).reshape(-1, 1))
    with atomic_path(path) as tmp:
        w.write_header_to_file(tmp)
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


def read(path: str | Path) -> Imatrix:
    """An imatrix GGUF (ours or llama-imatrix's) back into sums and counts."""
    path = Path(path)
    if not path.is_file():
        raise EdgetuneError(f"{path}: importance matrix file not found")
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except Exception as e:
        raise EdgetuneError(f"{path}: not a readable GGUF ({str(e).splitlines()[0][:120]})") from None
    fields = reader.fields
    if KEY_CHUNK_SIZE not in fields or KEY_DATASETS not in fields:
        raise EdgetuneError(f"{path}: not an imatrix GGUF (no {KEY_CHUNK_SIZE} / {KEY_DATASETS})")
    im = Imatrix(datasets=list(fields[KEY_DATASETS].contents()),
                 chunk_size=int(fields[KEY_CHUNK_SIZE].contents()),
                 chunk_count=int(fields[KEY_CHUNK_COUNT].contents()) if KEY_CHUNK_COUNT in fields else 0)
    tensors = {t.name: np.array(t.data, dtype=np.float64) for t in reader.tensors}
    for name, data in tensors.items():
        if name.endswith(".in_sum2"):
            base = name[: -len(".in_sum2")]
            counts = tensors.get(f"{base}.counts")
            if counts is None:
                raise EdgetuneError(f"{path}: {base} has in_sum2 but no counts")
            im.sums[base] = data.reshape(counts.size, -1)
            im.counts[base] = counts.reshape(-1)
    return im
