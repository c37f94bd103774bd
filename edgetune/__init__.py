"""edgetune: dataset + base model -> fine-tuned, quantized, smoke-tested GGUF for the CPU.

The package reads top to bottom as the job does:
  inputs/    what the user brings: recipe, data, templates, base models, hub ids, the demo, GGUF checks
  steps/     what a run does, in order: train/, merge, quantize/ (imatrix, sweep, mixed, kld), smoke, report
  measure/   how a model is judged on the held-out rows: heldout, hf_eval, gguf_eval, metrics
  use/       what a person does with the files: chat, serve, batch (existing adapters -> GGUF)
  pipeline, runs, results   the order of the steps, a run's folder, the typed records each step leaves
  errors, events, fsutil, logs, threads, device   the plumbing every layer may use
convert/ (HF -> GGUF) and tui/ (the Textual app) sit beside the package and install as edgetune.convert
and edgetune.tui.

This file is the one public door: the TUI, the CLI and the scripts import the core as
`from edgetune import <name>` with the names below, and never reach into its folders
(tests/test_layout.py holds them to it). Names resolve on first use, so `edgetune --help` does not
import torch or numpy.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

MODULES = {  # public name -> module
    "recipe": "edgetune.inputs.recipe", "data": "edgetune.inputs.data", "templates": "edgetune.inputs.templates",
    "base": "edgetune.inputs.base", "models": "edgetune.inputs.models", "hub": "edgetune.inputs.hub",
    "demo": "edgetune.inputs.demo",
    "train": "edgetune.steps.train.train", "loss": "edgetune.steps.train.loss", "merge": "edgetune.steps.merge",
    "sweep": "edgetune.steps.quantize.sweep", "quantize": "edgetune.steps.quantize.quantize",
    "imatrix": "edgetune.steps.quantize.imatrix", "kld": "edgetune.steps.quantize.kld",
    "mixed": "edgetune.steps.quantize.mixed", "smoke": "edgetune.steps.smoke", "report": "edgetune.steps.report",
    "report_html": "edgetune.steps.report_html",
    "heldout": "edgetune.measure.heldout", "metrics": "edgetune.measure.metrics", "hf_eval": "edgetune.measure.hf_eval",
    "gguf_eval": "edgetune.measure.gguf_eval", "gguf_io": "edgetune.inputs.gguf_io",
    "chat": "edgetune.use.chat", "serve": "edgetune.use.serve", "batch": "edgetune.use.batch",
    "pipeline": "edgetune.pipeline", "runs": "edgetune.runs", "results": "edgetune.results",
    "errors": "edgetune.errors", "events": "edgetune.events", "fsutil": "edgetune.fsutil", "logs": "edgetune.logs",
    "threads": "edgetune.threads", "device": "edgetune.device", "cli": "edgetune.cli",
}

NAMES = {  # module -> the names the door takes from it
    "edgetune.errors": ("EdgetuneError",),
    "edgetune.events": ("Event", "TrainMetrics", "CancelToken", "Cancelled", "duration", "progress_line"),
    "edgetune.fsutil": ("cache_dir",),
    "edgetune.device": ("estimate_throughput", "lora_flops_per_token", "matmul_peak_gflops"),
    "edgetune.runs": ("RunFolder", "RunSummary", "gguf_of", "list_runs", "summarize"),
    "edgetune.results": ("FileCheck", "QuantFile", "QuantResult", "SmokeResult"),
    "edgetune.pipeline": ("STEPS", "write_reports"),
    "edgetune.cli": ("main",),
    "edgetune.inputs.recipe": ("Recipe", "DataSpec", "TrainSpec"),
    "edgetune.inputs.base": ("BUILTIN", "resolve_base", "load_tokenizer", "check_model_folder"),
    "edgetune.inputs.models": ("gemma3_270m_gguf",),
    "edgetune.inputs.hub": ("check_id", "is_hub_id"),
    "edgetune.inputs.demo": ("TASKS", "WORDS", "task_example", "corpus", "train_tokenizer", "build_demo_base",
                             "demo_base_ready"),
    "edgetune.steps.train.train": ("Plan", "plan", "estimate", "tracker_problem"),
    "edgetune.steps.quantize.sweep": ("budget_text",),
    "edgetune.steps.quantize.mixed": ("LADDER",),
    "edgetune.measure.metrics": ("logits_perplexity",),
    "edgetune.steps.report": ("verdict_lines",),
    "edgetune.steps.report_html": ("open_report",),
    "edgetune.measure.heldout": ("Heldout",),
    "edgetune.inputs.gguf_io": ("bits_per_weight", "check_gguf_file"),
    "edgetune.use.chat": ("ChatSession", "shown"),
    "edgetune.use.batch": ("run_batch", "find_adapters", "adapter_problem", "convert_merged", "slug"),
}
_OWNER = {name: module for module, names in NAMES.items() for name in names}

__all__ = ["__version__", *MODULES, *_OWNER]


def __getattr__(name: str):
    if name in MODULES:
        value = importlib.import_module(MODULES[name])
    elif name in _OWNER:
        value = getattr(importlib.import_module(_OWNER[name]), name)
    else:
        raise AttributeError(f"module 'edgetune' has no attribute {name!r}")
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
