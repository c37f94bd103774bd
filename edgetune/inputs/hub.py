"""Hugging Face hub ids: the one rule for what counts as one, and resolving an id to a local folder
before any step starts.

An id resolves through huggingface_hub's own cache: a copy cached locally is used (also when the
hub cannot be reached); otherwise it is downloaded (an interrupted download resumes on the next
run: huggingface_hub keeps the partial files, and nothing here deletes them). Every failure is one
EdgetuneError line that names the id and says what to do instead.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from edgetune.errors import EdgetuneError
from edgetune.events import Callback, Event, ignore

# What a model folder needs (weights, configs, tokenizer, chat template, remote code if asked for).
MODEL_FILES = ["*.safetensors", "*.json", "*.model", "*.jinja", "*.txt", "*.tiktoken", "*.py"]
# Data files `datasets` can load from a folder, and the README that names a dataset's configs.
DATASET_FILES = ["*.parquet", "*.arrow", "*.jsonl", "*.json", "*.csv", "*.tsv", "*.txt", "*.md", "*.gz", "*.zst"]
# A name ending like a file is a missing file, not a hub id ('data/train.jsonl', 'out/model.gguf').
FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet", ".gguf", ".safetensors", ".bin", ".yaml",
                 ".yml", ".txt", ".pt")
# huggingface_hub's own rule for one part of a repo id (letters, digits, '-', '_', '.'; 96 at most).
_PART = re.compile(r"[\w\-.]{1,96}")
PATTERNS = {"model": MODEL_FILES, "dataset": DATASET_FILES}
INSTEAD = {"model": "use a local model folder, a .gguf file or a built-in base (demo, gemma3-270m)",
           "dataset": "use a local .jsonl, .json, .csv or .parquet file (or demo)"}


def is_hub_id(spec: str) -> bool:
    """True for 'org/name' that is not a local path: the one rule for models and datasets alike."""
    parts = spec.split("/")
    return (len(parts) == 2 and all(_PART.fullmatch(p) and not p.startswith((".", "-")) for p in parts)
            and "--" not in spec and ".." not in spec and not spec.lower().endswith(FILE_SUFFIXES)
            and not Path(spec).expanduser().exists())


def offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now; huggingface_hub reads it once at import."""
    from huggingface_hub import constants
    return constants.HF_HUB_OFFLINE or any(
        os.environ.get(k, "").upper() in ("1", "ON", "YES", "TRUE") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_id(repo_id: str, repo_type: str = "model", timeout: float = 10.0) -> str:
    """Whether `repo_id` can be used, without downloading it: 'cached' or 'on the hub'. Raises one
    line when it is not cached and the hub cannot be reached, or is gated, private or missing."""
    cached = _cached(repo_id, repo_type)
    if offline():
        if cached:
            return "cached"
        raise EdgetuneError(_unreachable(repo_id, repo_type, "offline mode: HF_HUB_OFFLINE=1 or --offline"))
    from huggingface_hub import HfApi
    try:
        HfApi().repo_info(repo_id, repo_type=repo_type, timeout=timeout)
    except Exception as e:
        if not _is_connection_error(e):
            raise _hub_error(repo_id, repo_type, e) from None
        if cached:
            return "cached"
        raise EdgetuneError(_unreachable(repo_id, repo_type, _reason(e))) from None
    return "on the hub"


def resolve_model_id(repo_id: str, on_event: Callback = ignore, allow_pickle: bool = False) -> Path:
    """The local folder of a hub model: the cached copy, or downloaded now (safetensors, configs,
    tokenizer; pickle weights only with `allow_pickle`)."""
    return _snapshot(repo_id, "model", PATTERNS["model"] + (["*.bin"] if allow_pickle else []), on_event)


def resolve_dataset_id(repo_id: str, on_event: Callback = ignore) -> Path:
    """The local folder of a hub dataset (its data files), cached or downloaded now."""
    return _snapshot(repo_id, "dataset", PATTERNS["dataset"], on_event)


def _snapshot(repo_id: str, repo_type: str, patterns: list[str], on_event: Callback) -> Path:
    from huggingface_hub import errors, snapshot_download

    state = check_id(repo_id, repo_type)
    if state == "on the hub":
        on_event(Event("base", "log", f"{repo_id}: fetching what the local cache lacks from the hub "
                                      "(an interrupted download resumes on the next run)"))
    try:  # "cached" means offline or unreachable: the cache alone, no second wait for the network
        folder = snapshot_download(repo_id, repo_type=repo_type, allow_patterns=patterns,
                                   local_files_only=state == "cached")
    except errors.LocalEntryNotFoundError as e:
        if isinstance(e, getattr(errors, "IncompleteSnapshotError", ())):
            raise EdgetuneError(f"{repo_id}: the cached copy is incomplete (an interrupted download) and the hub "
                                "cannot be reached; run again with a network to resume the download, or "
                                f"{INSTEAD[repo_type]}") from None
        raise EdgetuneError(_unreachable(repo_id, repo_type, _reason(e.__cause__ or e))) from None
    except Exception as e:
        if _is_connection_error(e):
            raise EdgetuneError(f"{repo_id}: the download stopped, the hub cannot be reached ({_reason(e)}); "
                                "run again to resume it, or " + INSTEAD[repo_type]) from None
        raise _hub_error(repo_id, repo_type, e) from None
    return Path(folder)


def _cached(repo_id: str, repo_type: str) -> bool:
    from huggingface_hub import snapshot_download
    try:
        snapshot_download(repo_id, repo_type=repo_type, allow_patterns=PATTERNS[repo_type], local_files_only=True)
    except Exception:  # not cached, or cached only in part
        return False
    return True


def _unreachable(repo_id: str, repo_type: str, why: str) -> str:
    kind = "model" if repo_type == "model" else "dataset"
    return (f"{repo_id}: this hub {kind} is not in the local cache and the hub cannot be reached ({why}); "
            f"{INSTEAD[repo_type]}")


def _hub_error(repo_id: str, repo_type: str, e: Exception) -> EdgetuneError:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
    )

    login = "log in with `hf auth login` (or set HF_TOKEN)"
    if isinstance(e, GatedRepoError):
        return EdgetuneError(f"{repo_id}: gated on the hub; accept its terms on huggingface.co and {login}, or "
                             f"{INSTEAD[repo_type]}")
    if isinstance(e, RepositoryNotFoundError):
        return EdgetuneError(f"{repo_id}: not found on the hub, or private (if it is yours, {login})")
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, HfHubHTTPError) and status in (401, 403):
        return EdgetuneError(f"{repo_id}: the hub refused access (HTTP {status}: gated or private); {login}, or "
                             f"{INSTEAD[repo_type]}")
    if isinstance(e, HfHubHTTPError):
        return EdgetuneError(f"{repo_id}: the hub answered HTTP {status}; try again later, or {INSTEAD[repo_type]}")
    first = (str(e).splitlines() or [""])[0][:160]
    return EdgetuneError(f"{repo_id}: cannot fetch from the hub ({type(e).__name__}: {first})")


def _is_connection_error(e: BaseException) -> bool:
    """No network, refused, timed out or offline mode, whatever HTTP client huggingface_hub uses."""
    names = {c.__name__ for c in type(e).__mro__}
    return isinstance(e, (ConnectionError, TimeoutError)) or bool(
        names & {"TransportError", "ConnectError", "TimeoutException", "ConnectionError", "Timeout",
                 "OfflineModeIsEnabled"})


def _reason(e: BaseException) -> str:
    if type(e).__name__ == "OfflineModeIsEnabled":
        return "offline mode: HF_HUB_OFFLINE=1 or --offline"
    first = (str(e).splitlines() or [""])[0][:120]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def check_ids(models: list[str] = (), datasets: list[str] = ()) -> None:
    """Check every hub id among a run's models and datasets before anything starts or is written."""
    for spec in models:
        if is_hub_id(spec):
            check_id(spec, "model")
    for spec in datasets:
        if is_hub_id(spec):
            check_id(spec, "dataset")
