"""Hub ids without a network: one rule for what is an id, the cached copy used, and one line (exit 2,
nothing written) when it is not cached and the hub cannot be reached, or is gated or private."""
import json
import os
import shutil
import subprocess
import sys

import httpx2
import pytest
from huggingface_hub import constants
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

from edgetune import hub
from edgetune.errors import EdgetuneError
from edgetune.inputs.base import resolve_base
from edgetune.inputs.data import read_rows

NOT_CACHED = "not in the local cache and the hub cannot be reached"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of this test's own."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def unreachable_hub(monkeypatch):
    """Online mode, but the hub's address refuses connections (a machine without internet)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")


def cache_repo(cache, repo_id, files, repo_type="model"):
    """A snapshot as huggingface_hub leaves it: refs/main naming a commit, snapshots/<commit>/files."""
    folder = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = "a" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, src in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, str):
            (snapshot / name).write_text(src)
        else:
            shutil.copy(src, snapshot / name)
    return folder, snapshot


def test_one_rule_for_hub_ids(tmp_path):
    for spec in ("Qwen/Qwen2.5-0.5B", "tatsu-lab/alpaca", "org/model_v1.2"):
        assert hub.is_hub_id(spec), spec
    (tmp_path / "org" / "model").mkdir(parents=True)
    local = str(tmp_path / "org" / "model")
    for spec in ("gpt2", "demo", "a/b/c", "data/train.jsonl", "out/model.gguf", "my org/x", ".hidden/x",
                 "org/../x", "org--a/b", "C:\\x/y", local):
        assert not hub.is_hub_id(spec), spec


def test_offline_and_not_cached_is_one_line_naming_the_id(hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EdgetuneError) as e:
        resolve_base("some-org/some-model")
    message = str(e.value)
    assert message.startswith("some-org/some-model: this hub model is " + NOT_CACHED)
    assert "offline mode" in message and "a .gguf file" in message and "demo, gemma3-270m" in message
    assert "\n" not in message
    with pytest.raises(EdgetuneError, match=f"some-org/data: this hub dataset is {NOT_CACHED}.*jsonl"):
        read_rows("some-org/data")


def test_unreachable_hub_and_not_cached(hub_cache, unreachable_hub):
    with pytest.raises(EdgetuneError) as e:
        resolve_base("some-org/some-model")
    assert str(e.value).startswith(f"some-org/some-model: this hub model is {NOT_CACHED} (ConnectError")


def test_cached_copy_is_used_offline_and_when_the_hub_is_unreachable(hub_cache, tiny_base, monkeypatch):
    _, snapshot = cache_repo(hub_cache, "org/tiny", {p.name: p for p in tiny_base.iterdir() if p.is_file()})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_base("org/tiny") == str(snapshot)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    assert resolve_base("org/tiny") == str(snapshot)


def test_cached_hub_dataset_loads_offline(hub_cache, monkeypatch):
    rows = "".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(3))
    cache_repo(hub_cache, "org/tiny-data", {"README.md": "# tiny\n", "data/train.jsonl": rows}, "dataset")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    got = read_rows("org/tiny-data")
    assert [r.record["output"] for r in got] == ["a0", "a1", "a2"]
    assert got[0].where == "org/tiny-data row 0"


def test_interrupted_download_is_named_and_its_partial_files_kept(hub_cache, tiny_base, monkeypatch):
    """A sharded model whose second shard never arrived: one line saying a rerun resumes it; the
    partial blob huggingface_hub resumes from is still there afterwards."""
    files = {p.name: p for p in tiny_base.iterdir() if p.is_file() and p.suffix != ".safetensors"}
    files["model-00001-of-00002.safetensors"] = tiny_base / "model.safetensors"
    files["model.safetensors.index.json"] = json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})
    folder, _ = cache_repo(hub_cache, "org/sharded", files)
    (folder / "blobs").mkdir()
    partial = folder / "blobs" / ("b" * 64 + ".incomplete")
    partial.write_bytes(b"\0" * 1024)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EdgetuneError, match="1 of 2 weight shards missing, e.g. model-00002-of-00002.safetensors "
                                            r"\(an interrupted download\? run again with a network to resume it\)"):
        resolve_base("org/sharded")
    assert partial.stat().st_size == 1024


def _http_error(cls, status):
    request = httpx2.Request("GET", "https://huggingface.co/api/models/org/x")
    return cls(f"{status} Client Error", response=httpx2.Response(status, request=request))


@pytest.mark.parametrize("error, expected", [
    (lambda: _http_error(GatedRepoError, 401), "org/x: gated on the hub; accept its terms on huggingface.co and log in"),
    (lambda: _http_error(RepositoryNotFoundError, 401), "org/x: not found on the hub, or private"),
    (lambda: _http_error(HfHubHTTPError, 403), "org/x: the hub refused access (HTTP 403: gated or private)"),
])
def test_gated_or_private_is_one_line(hub_cache, unreachable_hub, monkeypatch, error, expected):
    from huggingface_hub import HfApi

    def refuse(self, repo_id, **kwargs):
        raise error()
    monkeypatch.setattr(HfApi, "repo_info", refuse)
    with pytest.raises(EdgetuneError) as e:
        hub.check_id("org/x")
    assert str(e.value).startswith(expected) and "\n" not in str(e.value)


def _edgetune(args, cwd, **env):
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-m", "edgetune", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=full)


def test_cli_hub_id_without_network_is_one_line_exit_2_nothing_written(tmp_path, demo_jsonl):
    env = {"HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}
    proc = _edgetune(["--offline", "run", "--base", "Qwen/Qwen2.5-0.5B", "--data", str(demo_jsonl)], tmp_path, **env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "error: Qwen/Qwen2.5-0.5B: this hub model is not in the local cache and the hub cannot be reached "
        "(offline mode: HF_HUB_OFFLINE=1 or --offline); use a local model folder, a .gguf file or a built-in "
        "base (demo, gemma3-270m)"]
    assert not (tmp_path / "runs").exists()
    unreachable = {**env, "HF_ENDPOINT": "http://127.0.0.1:9"}
    for args in (["train", "--base", "org/model", "--data", str(demo_jsonl)],
                 ["data", "inspect", "org/some-data"]):
        proc = _edgetune(args, tmp_path, **unreachable)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.splitlines()) == 1 and NOT_CACHED in proc.stderr
    assert not (tmp_path / "runs").exists()
