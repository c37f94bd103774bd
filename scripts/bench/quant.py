"""Importance matrix from calibration text vs none: mean KL divergence from the F16 file on a different
evaluation text, per quant type, measured by llama.cpp in one run; an importance matrix from the task's own
training rows vs one from generic English, both judged on the task's held-out rows; and the cost of the
imatrix pass against one LoRA training epoch's worth of forward+backward over the same tokens.

Calibration text: Python stdlib module docstrings (one set of modules); evaluation text: the docstrings
of other modules, never seen by the imatrix. The baseline of each ratio is the same type (or, for IQ
types, which llama.cpp only writes well with an imatrix, the K/legacy type of the same bits) quantized
without an imatrix, measured the same way in the same run.

The task comparison: the task's rows (default: the demo's instruction dataset, `--task` takes any
dataset edgetune reads) are rendered with the model's chat template exactly as training renders them;
one imatrix comes from the training rows, the generic one from the stdlib docstrings above, and each
type quantized with either is measured on held-out rows of the task that neither imatrix saw.

    .venv/bin/python -m scripts.bench.quant                  # Gemma 3 270M (cached HF import)
    .venv/bin/python -m scripts.bench.quant --model demo     # the demo base, seconds
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from scripts.bench.harness import peak_rss_mib

# (type with the imatrix, the type without it that it is compared with)
PAIRS = [("Q4_0", "Q4_0"), ("IQ4_NL", "Q4_0"), ("Q3_K_M", "Q3_K_M"), ("IQ3_M", "Q3_K_M"), ("Q2_K", "Q2_K"),
         ("IQ2_M", "Q2_K")]
CALIBRATION_MODULES = ("argparse", "collections", "json", "logging", "textwrap", "unittest", "subprocess",
                       "pathlib", "typing", "dataclasses", "functools", "itertools", "asyncio", "email")
EVALUATION_MODULES = ("csv", "datetime", "decimal", "fractions", "heapq", "sqlite3", "statistics", "tarfile",
                      "zipfile", "shutil", "string", "random")


def docstrings(names) -> list[str]:
    """Module, class and function docstrings of stdlib modules: offline English prose."""
    import importlib
    import inspect
    out = []
    for name in names:
        mod = importlib.import_module(name)
        for obj in [mod] + [v for _, v in inspect.getmembers(mod) if inspect.isclass(v) or inspect.isfunction(v)]:
            doc = inspect.getdoc(obj)
            if doc and len(doc) > 200:
                out.append(doc)
    return out


def rows_of(tok, texts, n_tokens: int, width: int) -> list[list[int]]:
    """Rows of `width` tokens (BOS first) from the texts, up to n_tokens in all."""
    ids = []
    for t in texts:
        ids += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id or 0]
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    rows = [bos + ids[i:i + width - len(bos)] for i in range(0, len(ids), width - len(bos))]
    rows = [r for r in rows if len(r) == width]
    return rows[: max(1, n_tokens // width)]


def train_pass(model_dir: str, rows: list[list[int]], out) -> None:
    """Forward+backward of a LoRA (r 16, q/k/v/o) over the rows, batch 1: what one epoch over the
    calibration tokens costs in training, the same rows the imatrix pass reads."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    t0 = time.perf_counter()
    for r in rows:
        ids = torch.tensor([r])
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    out.put((time.perf_counter() - t0, peak_rss_mib()))


def train_pass_in_child(model_dir: str, rows: list[list[int]]) -> tuple[float, float]:
    """train_pass in its own process, so its peak RSS is its own."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=train_pass, args=(model_dir, rows, q))
    p.start()
    result = q.get()
    p.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--calibration-tokens", type=int, default=16384)
    ap.add_argument("--eval-tokens", type=int, default=1024)  # 262k-vocab log-probs: 1 MiB a token
    ap.add_argument("--width", type=int, default=256, help="tokens per row")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--task", default="demo", help="the task dataset (demo, or a file edgetune reads)")
    ap.add_argument("--types", default=",".join(w for w, _ in PAIRS),
                    help="the types with an imatrix to measure (each against its pair without one)")
    ap.add_argument("--no-task", action="store_true", help="skip the task-vs-generic comparison")
    ap.add_argument("--train-rows", type=int, default=8,
                    help="rows the training pass times; the epoch time is per-token time x calibration tokens")
    a = ap.parse_args()
    pairs = [(w, b) for w, b in PAIRS if w in a.types.split(",")]
    from transformers import AutoTokenizer

    from edgetune import DataSpec, Heldout, heldout, kld, quantize, resolve_base
    from edgetune import data as data_mod
    from edgetune import imatrix as imatrix_mod
    from edgetune.convert import convert_hf_to_gguf

    model_dir = resolve_base(a.model)
    tok = AutoTokenizer.from_pretrained(model_dir)
    calib = rows_of(tok, docstrings(CALIBRATION_MODULES), a.calibration_tokens, a.width)
    evals = rows_of(tok, docstrings(EVALUATION_MODULES), a.eval_tokens, a.width)
    held = Heldout(evals, [[1] * len(r) for r in evals])
    task = data_mod.prepare(DataSpec(path=a.task, allow_lost_responses=True), tok, 0, str(model_dir))
    task_calib = imatrix_mod.calibration_rows(task.train, tok, 512, a.calibration_tokens)
    task_held = heldout.rows(task.eval, tok, 512, 0)
    keep, total = [], 0
    for ids, mask in zip(task_held.ids, task_held.masks):
        if total + len(ids) > a.eval_tokens:
            break
        keep.append((ids, mask))
        total += len(ids)
    task_held = Heldout([k[0] for k in keep], [k[1] for k in keep])
    print(f"model {a.model}: calibration {sum(map(len, calib))} tokens ({len(calib)} rows), evaluation "
          f"{sum(map(len, evals))} tokens of other text; {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(f"task {task.dataset.source} ({task.template.name if task.template else 'text'} template): "
          f"calibration {sum(map(len, task_calib))} tokens of training rows, evaluation "
          f"{sum(map(len, task_held.ids))} tokens of {len(task_held.ids)} held-out rows")

    # The imatrix pass first, so this process's peak RSS is its own (plus the tokenizer's).
    rss0 = peak_rss_mib()
    t0 = time.perf_counter()
    im = imatrix_mod.compute(model_dir, calib, "stdlib-docstrings")
    im_s = time.perf_counter() - t0
    im_rss = peak_rss_mib()
    n_train = min(a.train_rows, len(calib))
    train_s, train_rss = train_pass_in_child(model_dir, calib[:n_train])
    train_s *= len(calib) / n_train  # an epoch over the calibration rows, from the rows timed
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        f16 = convert_hf_to_gguf(model_dir, tmp / "m-F16.gguf", "f16")
        im_path = imatrix_mod.write(im, tmp / "m.imatrix.gguf")
        task_im_path = imatrix_mod.write(imatrix_mod.compute(model_dir, task_calib, "task"), tmp / "task.imatrix.gguf")
        ref = kld.reference(f16, held, max_tokens=1, threads=a.threads)
        task_ref = kld.reference(f16, task_held, max_tokens=1, threads=a.threads)
        results, on_task = {}, {}  # (type, imatrix kind) -> figures on the docstrings / on the task rows

        def measure(q: str, kind: str, path_im: Path | None, task_only: bool = False) -> None:
            out = tmp / f"m-{q}-{kind}.gguf"
            info = quantize.quantize(f16, out, q, a.threads, imatrix=path_im)
            size = {"mib": info["bytes"] / 2**20, "bpw": info["bits_per_weight"]}
            if not task_only:
                results[(q, kind)] = {**vars(kld.measure(out, ref, held, max_tokens=1, threads=a.threads)), **size}
            on_task[(q, kind)] = {**vars(kld.measure(out, task_ref, task_held, max_tokens=1, threads=a.threads)), **size}
            out.unlink()

        for with_im, without in pairs:
            if (with_im, "generic") not in results:
                measure(with_im, "generic", im_path)
            if (without, "none") not in results:
                measure(without, "none", None)
            if not a.no_task:
                measure(with_im, "task", task_im_path, task_only=True)

    print(f"\n{'with imatrix':14}{'MiB':>7}{'bpw':>6}{'KLD':>9}{'top-1':>7} | {'without':10}{'MiB':>7}{'KLD':>9}"
          f"{'top-1':>7} | {'KLD ratio':>9}")
    for with_im, without in pairs:
        w, b = results[(with_im, "generic")], results[(without, "none")]
        print(f"{with_im:14}{w['mib']:7.1f}{w['bpw']:6.2f}{w['mean_kld']:9.4f}{w['top1']:7.1%} | {without:10}"
              f"{b['mib']:7.1f}{b['mean_kld']:9.4f}{b['top1']:7.1%} | {w['mean_kld'] / b['mean_kld']:9.2f}x")
    if not a.no_task:
        print(f"\non the task's held-out rows: {'type':8}{'task imatrix KLD':>17}{'top-1':>7} | {'generic KLD':>12}"
              f"{'top-1':>7} | {'none KLD':>9} | {'task/generic':>12}")
    for with_im, without in pairs if not a.no_task else []:
        t, g, n = on_task[(with_im, "task")], on_task[(with_im, "generic")], on_task[(without, "none")]
        print(f"{'':29}{with_im:8}{t['mean_kld']:17.4f}{t['top1']:7.1%} | {g['mean_kld']:12.4f}{g['top1']:7.1%}"
              f" | {n['mean_kld']:9.4f} | {t['mean_kld'] / g['mean_kld']:11.2f}x")
    print(f"\nimatrix pass: {im_s:.1f}s over {sum(map(len, calib))} tokens ({len(im.sums)} matrices), peak RSS "
          f"{im_rss:.0f} MiB (before it {rss0:.0f}, tokenizer loaded); "
          "one LoRA epoch (r16 q/k/v/o, batch 1) over the same tokens: "
          f"{train_s:.1f}s (from {n_train} rows timed), peak RSS {train_rss:.0f} MiB; imatrix / epoch time {im_s / train_s:.2f}x")


if __name__ == "__main__":
    main()
