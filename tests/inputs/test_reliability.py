"""Bad inputs get one clear sentence naming the file and the line or field; nothing half-written."""
import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgetune import data
from edgetune.errors import EdgetuneError
from edgetune.inputs.base import check_model_folder, resolve_base
from edgetune.inputs.gguf_io import check_gguf_file


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# ---- datasets beyond tests/inputs/test_data.py

def test_a_10_mb_single_row_loads_and_is_truncated(tiny_base, tmp_path):
    from edgetune.inputs.base import load_tokenizer
    from edgetune.inputs.templates import choose
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"instruction": "Summarise", "input": "word " * 2_000_000, "output": "ok"}) + "\n")
    assert path.stat().st_size > 10_000_000
    ds = data.load_dataset(path)
    tok = load_tokenizer(str(tiny_base))
    rows = data.tokenize(data.to_examples(ds, tok, choose("alpaca", tok))[:1], tok, 128)
    stats = data.token_stats(rows, 128)
    assert len(rows[0]["input_ids"]) == 128 and stats.truncated == 1 and stats.responses_lost == 1


def test_parquet_with_other_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist([{"question": "q", "answer": "a"}]), tmp_path / "o.parquet")
    with pytest.raises(EdgetuneError) as e:
        data.load_dataset(tmp_path / "o.parquet")
    assert "o.parquet row 0: cannot tell the format from fields ['answer', 'question']" in one_line(e)


def test_only_empty_rows(tmp_path):
    (tmp_path / "e.csv").write_text("instruction,output\n,\n , \n")
    with pytest.raises(EdgetuneError, match="e.csv: no rows"):
        data.load_dataset(tmp_path / "e.csv")


def test_every_row_bad_with_skip(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"instruction": "a"}\n{"instruction": "b"}\n')
    with pytest.raises(EdgetuneError) as e:
        data.load_dataset(tmp_path / "b.jsonl", on_bad_row="skip")
    assert "no usable rows (2 bad; first: " in one_line(e) and "b.jsonl:1: missing field 'output'" in str(e.value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(
    st.binary(max_size=60),
    st.text(max_size=60).map(str.encode),
    st.dictionaries(st.sampled_from(["instruction", "input", "output", "text", "messages", "x"]),
                    st.one_of(st.text(max_size=10), st.integers(), st.none(),
                              st.lists(st.dictionaries(st.sampled_from(["role", "content"]),
                                                       st.text(max_size=8), max_size=2), max_size=3)),
                    max_size=4).map(lambda d: json.dumps(d).encode()),
), max_size=6), st.sampled_from(["jsonl", "json", "csv"]))
def test_fuzz_dataset_loader_only_raises_edgetune_error(tmp_path, lines, suffix):
    path = tmp_path / f"fuzz.{suffix}"
    path.write_bytes(b"\n".join(lines))
    try:
        ds = data.load_dataset(path, on_bad_row="skip")
    except EdgetuneError as e:
        assert "\n" not in str(e) and str(path) in str(e)
        return
    assert ds.rows and all(data.row_problem(r.record, ds.format) is None for r in ds.rows)


# ---- model folders

def test_model_folder_problems(tiny_base, tmp_path):
    def copy(name):
        d = tmp_path / name
        shutil.copytree(tiny_base, d)
        return d

    d = copy("noconfig")
    (d / "config.json").unlink()
    with pytest.raises(EdgetuneError, match="no config.json"):
        check_model_folder(d)
    d = copy("pickle")
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(EdgetuneError, match="only pickle weights"):
        check_model_folder(d)
    d = copy("notok")
    for f in d.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(EdgetuneError, match="no tokenizer"):
        check_model_folder(d)
    d = copy("badjson")
    (d / "config.json").write_text("{nope")
    with pytest.raises(EdgetuneError, match="config.json: not valid JSON"):
        check_model_folder(d)
    with pytest.raises(EdgetuneError, match="no such model folder, .gguf file or hub id"):
        resolve_base(str(tmp_path / "missing" / "x" / "y"))


def test_truncated_safetensors_in_merge(trained_run, tiny_base, tmp_path):
    from edgetune.steps.merge import merge
    _, run = trained_run
    base = tmp_path / "trunc"
    shutil.copytree(tiny_base, base)
    blob = (base / "model.safetensors").read_bytes()
    (base / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(EdgetuneError) as e:
        merge(str(base), run / "adapter", tmp_path / "out")
    assert "model.safetensors" in one_line(e)
    assert not (tmp_path / "out").exists()


def test_offline_hub_id_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EdgetuneError, match="not in the local cache and the hub cannot be reached .offline mode"):
        resolve_base("some-org/some-model-that-is-not-cached")


# ---- GGUF files

def test_gguf_file_problems(tmp_path):
    cases = {"not.gguf": b"hello world, not a gguf", "v9.gguf": b"GGUF" + (9).to_bytes(4, "little") + b"\0" * 32,
             "trunc.gguf": b"GGUF" + (3).to_bytes(4, "little") + (5).to_bytes(8, "little")}
    expect = {"not.gguf": "not a GGUF file", "v9.gguf": "GGUF version 9 is not supported",
              "trunc.gguf": "truncated or corrupt GGUF"}
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(EdgetuneError) as e:
            check_gguf_file(tmp_path / name)
        assert expect[name] in one_line(e) and name in str(e.value)
    with pytest.raises(EdgetuneError, match="GGUF file not found"):
        check_gguf_file(tmp_path / "missing.gguf")


# ---- security

def test_trust_remote_code_is_off_by_default():
    from edgetune.inputs.recipe import Recipe
    assert Recipe().train.trust_remote_code is False


def test_run_name_cannot_escape_the_runs_folder():
    from edgetune.inputs.recipe import from_dict
    for name in ("../x", "a/b", "/abs", ".hidden"):
        with pytest.raises(EdgetuneError, match="train|name"):
            from_dict({"name": name})


def test_pickle_base_only_when_allowed_and_then_weights_only(tiny_base, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_base, folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(EdgetuneError, match="only pickle weights"):
        resolve_base(str(folder))
    from pathlib import Path
    copy = Path(resolve_base(str(folder), allow_pickle=True))
    restored = load_file(str(next(copy.glob("*.safetensors"))))
    assert all(torch.equal(restored[k], v) for k, v in state.items())
    # A pickle that carries code, not just tensors, is refused even when pickles are allowed.
    evil = tmp_path / "evil"
    shutil.copytree(tiny_base, evil)
    (evil / "model.safetensors").unlink()

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"x": Boom()}, evil / "pytorch_model.bin")
    with pytest.raises(EdgetuneError, match="refused by torch.load\\(weights_only=True\\)"):
        resolve_base(str(evil), allow_pickle=True)
