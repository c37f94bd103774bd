"""Shared fixtures: a tiny demo-style base model built once per session, offline, in seconds."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402

# Module-scoped fixtures shared across test folders (the 256-wide Llama, its F16 file and imatrix).
pytest_plugins = ["quant_fixtures"]


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A 2-layer Llama (hidden 64) with a locally trained byte-level BPE tokenizer and chat template."""
    from edgetune.inputs.demo import build_demo_base
    return build_demo_base(tmp_path_factory.mktemp("tiny") / "base", steps=200, tiny=True)


@pytest.fixture(scope="session")
def tiny_bos_base(tmp_path_factory):
    """The tiny base with a tokenizer that puts BOS in front of text, as Llama and Gemma do."""
    from edgetune.inputs.demo import build_demo_base
    return build_demo_base(tmp_path_factory.mktemp("tiny_bos") / "base", steps=200, tiny=True, add_bos=True)


@pytest.fixture(scope="session")
def demo_jsonl(tmp_path_factory):
    from edgetune.inputs.demo import write_dataset
    return write_dataset(tmp_path_factory.mktemp("data") / "demo.jsonl", n_rows=160)


@pytest.fixture
def tiny_recipe(tiny_base, demo_jsonl, tmp_path):
    """A recipe that trains the tiny base for a few seconds, in this test's own folder."""
    return make_recipe(tiny_base, demo_jsonl, tmp_path / "runs")


def make_recipe(base, data_path, runs_dir, **overrides):
    from edgetune.inputs.recipe import from_dict
    values = {
        "name": "t", "base": str(base), "runs_dir": str(runs_dir),
        "data": {"path": str(data_path), "max_length": 64, "eval_split": 0.1},
        "train": {"lr": 1e-2, "epochs": 1, "max_steps": 12, "batch_size": 8, "grad_accum": 1, "save_steps": 6,
                  "eval_steps": 6, "logging_steps": 2, "gradient_checkpointing": False, "rank": 8, "alpha": 16},
        "export": {"quants": ["Q8_0", "Q4_K_M"]},
        "smoke": {"prompts": 4, "max_tokens": 8},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            values[key].update(value)
        else:
            values[key] = value
    return from_dict(values)


@pytest.fixture(scope="session")
def trained_run(tiny_base, demo_jsonl, tmp_path_factory):
    """A tiny run trained once per session: (recipe, run folder with adapter/)."""
    from edgetune import pipeline
    from edgetune.runs import RunFolder
    r = make_recipe(tiny_base, demo_jsonl, tmp_path_factory.mktemp("shared_runs"))
    pipeline.run(r, until="train")
    return r, RunFolder.of(r).dir
