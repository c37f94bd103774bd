"""The pipeline: train -> merge -> convert -> quantize -> smoke -> report, over one run folder.

Each step reads only what earlier steps wrote into runs/<name>/ and records a fingerprint of its
inputs in state.json; a step whose output exists with the same fingerprint is skipped, so a rerun
resumes where the last one stopped (training itself resumes from its last checkpoint).

runs/<name>/
  recipe.yaml  state.json  train_log.jsonl  train.json  adapter/  checkpoints/  merged/
  gguf/<name>-F16.gguf  gguf/<name>-Q4_K_M.gguf ...  gguf/Modelfile  gguf/README.md
  smoke.json  report.md
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from edgetune import recipe as recipe_mod
from edgetune import sweep as sweep_mod
from edgetune.errors import EdgetuneError
from edgetune.events import Callback, CancelToken, Event, ignore
from edgetune.fsutil import is_main_process, write_json, write_text
from edgetune.recipe import Recipe

STEPS = ("train", "merge", "convert", "quantize", "smoke")


class Run:
    """Paths and per-step state of one run folder."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.dir = recipe_mod.run_dir(recipe)
        self.adapter = self.dir / "adapter"
        self.merged = self.dir / "merged"
        self.gguf_dir = self.dir / "gguf"
        self.state_path = self.dir / "state.json"

    def gguf(self, qtype: str) -> Path:
        return self.gguf_dir / f"{self.recipe.name}-{qtype.upper()}.gguf"

    @property
    def unquantized(self) -> Path:
        return self.gguf(self.recipe.export.outtype)

    def state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def mark(self, step: str, fingerprint: str, seconds: float) -> None:
        if not is_main_process():
            return
        state = self.state()
        state[step] = {"fingerprint": fingerprint, "seconds": round(seconds, 1), "finished": time.time()}
        write_json(self.state_path, state)

    def fingerprint(self, step: str) -> str:
        r = self.recipe
        parts = {"train": (r.base, r.data, r.train), "merge": (), "convert": (r.export.outtype,),
                 "quantize": (r.export, r.smoke), "smoke": (r.smoke, r.export.quants)}
        upstream = STEPS[: STEPS.index(step)]
        text = json.dumps([_plain(parts[s]) for s in upstream + (step,)], default=str, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def up_to_date(self, step: str, outputs: list[Path]) -> bool:
        entry = self.state().get(step)
        return bool(entry) and entry["fingerprint"] == self.fingerprint(step) and all(p.exists() for p in outputs)


def _plain(obj):
    import dataclasses
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, (list, tuple)):
        return [_plain(o) for o in obj]
    return obj


def run(recipe: Recipe, on_event: Callback = ignore, cancel: CancelToken | None = None,
        until: str = "smoke", force: bool = False) -> dict:
    """Run every step up to `until`; return the smoke summary (or {} when stopping earlier)."""
    from edgetune import merge as merge_mod
    from edgetune import train as train_mod

    if until not in STEPS:
        raise EdgetuneError(f"step {until!r} is not one of {', '.join(STEPS)}")
    train_mod.quiet_libraries()
    r = Run(recipe)
    r.dir.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        write_text(r.dir / "recipe.yaml", recipe.to_yaml())
    if force:  # redo everything, training included
        r.state_path.unlink(missing_ok=True)

    def step(name: str, outputs: list[Path], fn) -> None:
        if cancel is not None:
            cancel.check()
        if r.up_to_date(name, outputs):
            on_event(Event(name, "skip", f"{name}: up to date"))
            return
        t0 = time.time()
        on_event(Event(name, "start", f"{name}"))
        fn()
        r.mark(name, r.fingerprint(name), time.time() - t0)
        on_event(Event(name, "done", f"{name}: {time.time() - t0:.1f}s", data={"seconds": time.time() - t0}))

    drop_stale_checkpoints(r, on_event, force)
    step("train", [r.adapter / "adapter_config.json"],
         lambda: train_mod.train(recipe, r.dir, on_event, cancel))
    if until == "train" or not is_main_process():
        return {}  # under a multi-process launch only rank 0 goes past training
    base_path = _trained_base(r)
    step("merge", [r.merged / "config.json"],
         lambda: merge_mod.merge(base_path, r.adapter, r.merged, on_event))
    if until == "merge":
        return {}
    from edgetune.convert import convert_hf_to_gguf
    step("convert", [r.unquantized],
         lambda: convert_hf_to_gguf(r.merged, r.unquantized, recipe.export.outtype, on_event,
                                    metadata={"general.name": recipe.name}))
    if until == "convert":
        return {}
    quant_json = r.dir / "quant.json"

    def quantize_all() -> None:
        summary = sweep_mod.run(recipe, r.merged, r.unquantized, r.gguf, base_path, quant_json, on_event, cancel)
        write_modelfile(r, sweep_mod.kept_labels(summary))
    outputs = [] if sweep_mod.is_auto(recipe) else [r.gguf(q) for q in recipe.export.quants
                                                    if q != recipe.export.outtype.upper()]
    step("quantize", outputs + [quant_json, r.gguf_dir / "Modelfile"], quantize_all)
    quants = sweep_mod.kept_labels(json.loads(quant_json.read_text()))
    if until == "quantize":
        return {}
    step("smoke", [r.dir / "smoke.json"], lambda: smoke_step(r, base_path, quants, on_event))
    summary = json.loads((r.dir / "smoke.json").read_text())
    write_text(r.dir / "report.md", report(r, summary) + sweep_mod.report_section(json.loads(quant_json.read_text())))
    from edgetune.smoke import require_pass
    require_pass(summary["files"])
    return summary


def drop_stale_checkpoints(r: Run, on_event: Callback, force: bool = False) -> None:
    """Checkpoints resume only the training they were made by: when the base, data or training
    settings changed (or `force`), start over rather than continue another run's optimizer state."""
    import shutil
    ckpt = r.dir / "checkpoints"
    stamp = ckpt / "edgetune-fingerprint"
    if not is_main_process():
        return
    if ckpt.is_dir() and (force or not stamp.is_file() or stamp.read_text() != r.fingerprint("train")):
        shutil.rmtree(ckpt)
        (r.dir / "train_log.jsonl").unlink(missing_ok=True)
        on_event(Event("train", "log", "settings changed since the last checkpoints: training starts over"))
    ckpt.mkdir(parents=True, exist_ok=True)
    stamp.write_text(r.fingerprint("train"))


def _trained_base(r: Run) -> str:
    try:
        return json.loads((r.dir / "train.json").read_text())["base_path"]
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        raise EdgetuneError(f"{r.dir}/train.json: missing; run the train step first") from None


def eval_examples(recipe: Recipe, tokenizer) -> list:
    from edgetune import data as data_mod
    from edgetune.train import dataset_source

    ds = data_mod.load_dataset(dataset_source(recipe.data.path), recipe.data.format, recipe.data.on_bad_row)
    _, evals = data_mod.split(data_mod.render(ds, tokenizer), recipe.data.eval_split, recipe.train.seed)
    return evals


def smoke_step(r: Run, base_path: str, quants: list[str], on_event: Callback) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgetune import smoke as smoke_mod

    spec = r.recipe.smoke
    tok = AutoTokenizer.from_pretrained(str(r.merged))
    examples = eval_examples(r.recipe, tok)
    if not examples:
        raise EdgetuneError(f"{r.dir}: no held-out rows to smoke-test with (data.eval_split is 0)")
    ref = smoke_mod.hf_reference(r.merged, examples, spec.max_tokens, spec.prompts, on_event, tokenizer=tok)
    # Accuracy before fine-tuning: the base model on the same prompts.
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    base.eval()
    base_answers = [smoke_mod.hf_generate(base, tok, ids, spec.max_tokens) for ids in ref.prompt_ids]
    del base
    n = max(len(ref.expected), 1)
    files = [r.unquantized] + [r.gguf(q) for q in quants]
    rows = smoke_mod.smoke(files, ref, spec.max_tokens, spec.threads, on_event)
    prompts = [tok.decode(ids, skip_special_tokens=True) for ids in ref.prompt_ids]
    summary = {
        "prompts": prompts, "expected": ref.expected,
        "base": {"answers": base_answers, "accuracy": sum(a == b for a, b in zip(base_answers, ref.expected)) / n},
        "hf": {"answers": ref.answers, "accuracy": sum(a == b for a, b in zip(ref.answers, ref.expected)) / n,
               "perplexity": ref.perplexity},
        "files": rows,
    }
    write_json(r.dir / "smoke.json", summary)


def report(r: Run, summary: dict) -> str:
    train = json.loads((r.dir / "train.json").read_text())
    lines = [f"# edgetune run `{r.recipe.name}`", "",
             f"- base: `{r.recipe.base}`; data: `{r.recipe.data.path}`",
             f"- {train['method']} on {train['device']} ({train['dtype']}), {train['steps']} steps, "
             f"{train['seconds']}s; trainable {train['trainable_params']:,} of {train['total_params']:,} params",
             f"- eval loss {train.get('eval_loss', float('nan')):.4f}, perplexity "
             f"{train.get('eval_perplexity', float('nan')):.3f}", "",
             f"Perplexity is on the held-out responses. Held-out accuracy (exact match, {len(summary['expected'])} prompts): base "
             f"{summary['base']['accuracy']:.0%} -> fine-tuned (HF) {summary['hf']['accuracy']:.0%}", "",
             "| file | size MiB | bits/w | ppl (HF {:.3f}) | logits NMSE | agree HF | accuracy | stops at EOS "
             "| prompt tok/s | gen tok/s | verdict |".format(summary["hf"]["perplexity"]),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in summary["files"]:
        lines.append(
            f"| {f['file']} | {f['bytes'] / 2**20:.2f} | {f['bits_per_weight']:.2f} | {f['perplexity']:.3f} | "
            f"{f['nmse']:.2e} | {f['agreement']:.0%} | {f['accuracy']:.0%} | "
            f"{f['stopped_at_eos']}/{len(f['answers'])} | {f['prompt_tokens_per_s'] or 0:.0f} | "
            f"{f['gen_tokens_per_s'] or 0:.0f} | {'pass' if f['passed'] else 'FAIL: ' + '; '.join(f['problems'])} |")
    best = summary["files"][-1]
    lines += ["", f"## Answers of `{best['file']}` on held-out prompts", "",
              "| prompt | expected | base | GGUF |", "|---|---|---|---|"]
    for p, e, b, a in zip(summary["prompts"], summary["expected"], summary["base"]["answers"], best["answers"]):
        cell = lambda s: s.replace("|", "\\|").replace("\n", " ")[:80]  # noqa: E731
        lines.append(f"| {cell(p)} | {cell(e)} | {cell(b)} | {cell(a)} |")
    return "\n".join(lines) + "\n"


def write_modelfile(r: Run, quants: list[str]) -> None:
    """An Ollama Modelfile and a model card beside the GGUFs; the Modelfile loads the recommended file
    of an auto sweep, else the last type asked for."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(r.merged))
    target = r.gguf((quants[0] if sweep_mod.is_auto(r.recipe) else quants[-1])) if quants else r.unquantized
    stops = [s for s in {tok.eos_token, "<|im_end|>" if "<|im_end|>" in tok.get_vocab() else None} if s]
    lines = [f"FROM ./{target.name}"]
    if _is_alpaca(r):
        lines.append('TEMPLATE """### Instruction:\n{{ .Prompt }}\n\n### Response:\n"""')
    elif "<|im_start|>" in tok.get_vocab():
        lines.append('TEMPLATE """{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
                     '<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"""')
    lines += [f'PARAMETER stop "{s}"' for s in stops] + ["PARAMETER temperature 0.7"]
    write_text(r.gguf_dir / "Modelfile", "\n".join(lines) + "\n")
    t = r.recipe.train
    card = [f"# {r.recipe.name}", "", f"Fine-tuned from `{r.recipe.base}` on `{r.recipe.data.path}` with edgetune "
            f"(LoRA r={t.rank}, alpha={t.alpha}, targets {t.targets}, lr {t.lr}, {t.epochs} epochs).", "",
            "Files:", ""] + [f"- `{p.name}` ({p.stat().st_size / 2**20:.1f} MiB)" for p in
                             sorted(r.gguf_dir.glob("*.gguf"))] + [
            "", "Prompt format: " + ("`### Instruction:\\n...\\n\\n### Response:\\n`" if _is_alpaca(r)
                                      else "the chat template stored in the GGUF"),
            "", f"Run: `ollama create {r.recipe.name} -f Modelfile`, or `edgetune chat {target.name}`."]
    write_text(r.gguf_dir / "README.md", "\n".join(card) + "\n")


def _is_alpaca(r: Run) -> bool:
    """Trained on alpaca rows (the format detected at training time, recorded in train.json)."""
    try:
        return json.loads((r.dir / "train.json").read_text()).get("format") == "alpaca"
    except (FileNotFoundError, json.JSONDecodeError):
        return r.recipe.data.format == "alpaca"
