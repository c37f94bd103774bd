"""The task verdict says 'good' only when the held-out answers got better (issue 24)."""
from __future__ import annotations

from edgetune import report
from edgetune.inputs.recipe import from_dict, steps_advice, train_rows
from edgetune.results import FileCheck, ModelAnswers, SmokeResult, TrainResult

REVERSE = ["olleh", "dlrow", "nohtyp"]  # a 'reverse the word' task: short answers, exact match measures


def _train(steps=39, rows=51, **tokens) -> TrainResult:
    return TrainResult("lora", "cpu", "fp32", "demo", "demo", 1, 10, steps=steps, seconds=23.4, train_rows=rows,
                       tokens=tokens)


def _file(answers, stopped, accuracy=0.0) -> FileCheck:
    return FileCheck("r-Q4_K_M.gguf", "r-Q4_K_M.gguf", 1, 4.9, True, answers=answers, stopped_at_eos=stopped,
                     accuracy=accuracy)


def test_perplexity_alone_is_not_good_when_answers_babble_and_never_stop():
    """The issue's run: accuracy 0% -> 0%, perplexity 8808613.46 -> 425.24, 'ceanceancean…', stops 0/3."""
    babble = ["ceanceanceanceanceancean"] * 3
    smoke = SmokeResult(["p1", "p2", "p3"], REVERSE, base=ModelAnswers(["", "", ""], 0.0, 8808613.46, 0),
                        hf=ModelAnswers(babble, 0.0, 425.24, 0), files=[_file(babble, 0)])
    task = report.task_verdict(smoke, _train(), [])
    assert task.verdict == "poor"
    reasons = " | ".join(task.reasons)
    assert "answers never stop" in reasons and "0 of 3" in reasons
    assert "held-out accuracy did not rise (0% -> 0%) though the response perplexity fell" in reasons
    line = report.verdict_lines(SmokeResult(**{**vars(smoke), "task": task}))[-1]
    assert line.startswith("task verdict: poor (held-out accuracy 0% -> 0%") and "likely: " in line


def test_a_perplexity_of_millions_is_never_good():
    """The other run ended at perplexity 3.2 million: lower than the base's, still not learned."""
    long_answers = ["a whole sentence of free text that exact match cannot judge at all, " * 2] * 3
    smoke = SmokeResult(["p1", "p2", "p3"], long_answers, base=ModelAnswers(["x"] * 3, 0.0, 9.1e6, 3),
                        hf=ModelAnswers(["y"] * 3, 0.0, 3.2e6, 3), files=[_file(["y"] * 3, 3)])
    task = report.task_verdict(smoke, _train(), [])
    assert task.verdict == "poor"
    assert any("still 3,200,000" in r for r in task.reasons)


def test_good_needs_accuracy_up_and_answers_that_stop_in_every_file():
    smoke = SmokeResult(["p1", "p2", "p3"], REVERSE, base=ModelAnswers(["", "", ""], 0.0, 900.0, 0),
                        hf=ModelAnswers(REVERSE, 1.0, 1.4, 3), files=[_file(REVERSE, 3, 1.0)])
    assert report.task_verdict(smoke, _train(), []).verdict == "good"
    smoke.files = [_file(REVERSE, 0, 1.0)]  # the GGUF runs on past the answer
    task = report.task_verdict(smoke, _train(), [])
    assert task.verdict == "poor" and "r-Q4_K_M.gguf ended 0 of 3" in task.reasons[0]
    smoke.files[0].passed, smoke.files[0].problems = False, ["perplexity 74536.59 > 1.5x HF's 2857.20"]
    # A file that failed its own check is the file verdict's to report, not a cause in training.
    assert report.task_verdict(smoke, _train(), []).verdict == "good"


def test_no_better_than_the_base_names_the_cause_and_what_to_try():
    """57 rows at batch 16 x accum 2: six optimizer steps; accuracy and perplexity did not move."""
    recipe = from_dict({"train": {"batch_size": 16, "grad_accum": 2, "epochs": 3}})
    smoke = SmokeResult(["p1", "p2", "p3"], REVERSE, base=ModelAnswers(["a", "b", "c"], 0.0, 40.0, 3),
                        hf=ModelAnswers(["a", "b", "c"], 0.0, 39.5, 3), files=[_file(["a", "b", "c"], 3)])
    rows = train_rows(57, 0.1)
    task = report.task_verdict(smoke, _train(steps=6, rows=rows), [3.0, 3.0, 2.99, 3.0, 2.99, 2.99], recipe)
    assert task.verdict == "no better than the base"
    reasons = " | ".join(task.reasons)
    assert "51 training rows at batch 16 x accum 2, 3 epochs give only 6 optimizer steps" in reasons
    assert "try train.batch_size 4 with train.grad_accum 1 (39 steps)" in reasons
    assert "barely moved" in reasons and "raise train.lr" in reasons


def test_loss_that_rose_points_at_the_learning_rate_and_cut_responses_at_max_length():
    smoke = SmokeResult(["p"], ["x"], base=ModelAnswers([""], 0.0, 9.0, 0), hf=ModelAnswers(["z"], 0.0, 12.0, 1),
                        files=[])
    task = report.task_verdict(smoke, _train(steps=200, responses_cut=85, count=240, max_length=128, p99=210),
                               [2.0, 2.1, 2.3, 2.6, 2.9, 3.4])
    assert task.verdict == "no better than the base"
    assert task.reasons[0].startswith("85 of 240 responses were cut at data.max_length 128")
    assert any("loss rose" in r and "lower train.lr" in r for r in task.reasons)


def test_steps_advice():
    t = from_dict({"train": {"batch_size": 16, "grad_accum": 2, "epochs": 3}}).train
    assert "only 6 optimizer steps" in steps_advice(t, 51)
    assert steps_advice(t, 2000) is None
    tiny = steps_advice(t, 4)
    assert "train.batch_size 1" in tiny and "train.epochs 8" in tiny
    assert "train.max_steps to 30" in steps_advice(from_dict({"train": {"max_steps": 10}}).train, 500)
