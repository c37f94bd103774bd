"""The real Gemma 3 270M base, fine-tuned briefly on alpaca rows: the file's own chat template, as
llama-cpp-python's chat completion renders it, must feed the model the ids it was trained on (BOS
once) and answer exactly as the training-format prompt does, in the F16 and the Q8_0 file.
Slow: a few minutes on 2 cores (the Gemma import is cached)."""
import pytest

from edgetune import pipeline
from edgetune.inputs.demo import write_dataset
from edgetune.runs import RunFolder

from conftest import make_recipe

pytestmark = pytest.mark.slow


def test_gemma_chat_path_answers_like_training(tmp_path):
    from llama_cpp import Llama

    from edgetune import smoke

    data = write_dataset(tmp_path / "tasks.jsonl", n_rows=60)
    r = make_recipe("gemma3-270m", data, tmp_path / "runs",
                    data={"max_length": 96, "eval_split": 0.1},
                    train={"lr": 2e-4, "max_steps": 6, "batch_size": 4, "rank": 8, "alpha": 16, "save_steps": 6,
                           "eval_steps": 6, "logging_steps": 2},
                    export={"quants": ["Q8_0"]}, smoke={"prompts": 4, "max_tokens": 12})
    summary = pipeline.run(r)
    run = RunFolder.of(r)
    assert run.train_result().template == "gemma"  # no template in the base; its vocabulary has the turn tokens
    for f in summary.files:
        assert f.passed, (f.file, f.problems)
        assert f.chat_path == "ok" and f.chat_answers == f.answers and len(f.answers) == 4
    llm = Llama(model_path=str(run.gguf("Q8_0")), vocab_only=True, verbose=False)
    ids = smoke.chat_ids(llm, smoke.chat_formatter(llm), [{"role": "user", "content": "Hi"}])
    assert ids[:2] == [2, 105] and ids.count(2) == 1  # <bos><start_of_turn>, BOS exactly once
    modelfile = (run.modelfile).read_text()
    assert "<start_of_turn>" in modelfile and 'PARAMETER stop "<end_of_turn>"' in modelfile
