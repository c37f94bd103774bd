"""Each step's result round-trips through its JSON file as the same typed record; a file that is not
one says so in one line naming it."""
import json

import pytest

from edgetune.errors import EdgetuneError
from edgetune.results import (
    BaseFigures,
    FileCheck,
    ModelAnswers,
    QuantFile,
    QuantReference,
    QuantResult,
    RunState,
    SmokeResult,
    StepRecord,
    SweepResult,
    TaskVerdict,
    TrainResult,
)
from edgetune.use.batch import Manifest


def test_every_record_round_trips_with_nested_types(tmp_path):
    quant = QuantResult(reference=QuantReference("m-F16.gguf", 3.2, 0.5, 120, 6, ["a", "b"], 2),
                        base=BaseFigures(9.5, 0.0, ["x", "y"], 1, [10.0, 12.5], [5, 6]),
                        files=[QuantFile("Q4_K_M", "Q4_K_M", bytes=100, mean_kld=0.01, top1=0.99, kept=True,
                                         recommended=True, types={"Q4_K": 3})],
                        sweep=SweepResult("top-1 >= 98%", True, "Q4_K_M", "smallest"), seconds={"imatrix": 1.5})
    smoke = SmokeResult(["p"], ["e"], ModelAnswers(["b"], 0.0, 9.0, 0), ModelAnswers(["e"], 1.0, 2.0, 1),
                        [FileCheck("m-F16.gguf", "/r/m-F16.gguf", 100, 16.0, True, nmse=1e-6, perplexity=2.0,
                                  hf_perplexity=2.0)],
                        TaskVerdict("good", [0.0, 1.0], [9.0, 2.0]))
    train = TrainResult("lora", "cpu", "fp32", "demo", "/cache/demo", 10, 100, 24, 12.5, tokens={"p99": 40})
    state = RunState(steps={"train": StepRecord("abc", 12.5, 1.0)}, outcome="done")
    for record in (quant, smoke, train, state):
        path = tmp_path / f"{type(record).__name__}.json"
        record.write(path)
        back = type(record).read(path)
        assert back == record
    back = QuantResult.read(tmp_path / "QuantResult.json")
    assert isinstance(back.files[0], QuantFile) and back.recommended().label == "Q4_K_M"
    assert back.base.perplexity_over(1) == pytest.approx(7.389, rel=1e-3)  # exp(10 / 5)
    assert isinstance(SmokeResult.read(tmp_path / "SmokeResult.json").files[0], FileCheck)


def test_an_older_file_reads_with_defaults_and_a_broken_one_names_itself(tmp_path):
    older = tmp_path / "quant.json"
    older.write_text(json.dumps({"base": {"perplexity": 9.5, "accuracy": None}, "files": [], "retired_key": 1}))
    quant = QuantResult.read(older)
    assert quant.base.row_tokens == [] and quant.base.perplexity_over(3) is None and quant.seconds == {}
    bad = tmp_path / "smoke.json"
    bad.write_text("{not json")
    with pytest.raises(EdgetuneError, match=r"smoke.json: not valid JSON"):
        SmokeResult.read(bad)
    bad.write_text(json.dumps({"prompts": []}))
    with pytest.raises(EdgetuneError, match=r"smoke.json: not a SmokeResult this edgetune can read"):
        SmokeResult.read(bad)
    with pytest.raises(EdgetuneError, match=r"train.json: missing"):
        TrainResult.read(tmp_path / "train.json")


def test_one_rule_for_what_is_done(tmp_path):
    """A pipeline step and a batch adapter are skipped by the same rule: same inputs, outputs all there."""
    out = tmp_path / "a.gguf"
    out.write_bytes(b"GGUF")
    record = StepRecord("abc", 1.0, 0.0, [str(out)])
    assert record.done("abc") and not record.done("abd")
    assert not record.done("abc", [out, tmp_path / "gone.gguf"])
    manifest = Manifest(tmp_path)
    manifest.record("adapter-1", "abc", [str(out)], 2.0)
    assert Manifest(tmp_path).done("adapter-1", "abc")
    out.unlink()
    assert not Manifest(tmp_path).done("adapter-1", "abc")
    # A manifest of an earlier edgetune (no seconds) still reads; one that is not ours is redone, not a crash.
    (tmp_path / "manifest.json").write_text(json.dumps({"x": {"fingerprint": "f", "files": [], "finished": 1.0}}))
    assert Manifest(tmp_path).done("x", "f")
    (tmp_path / "manifest.json").write_text(json.dumps(["not", "ours"]))
    assert Manifest(tmp_path).entries == {}
