"""Chat templates: the ids every consumer feeds the model are the ids it was trained on, BOS
exactly once; the Modelfile's Go template says the same; the template choice and its errors."""
from __future__ import annotations

import json

import pytest

from edgetune import hf_eval, report, smoke, templates
from edgetune.convert import convert_hf_to_gguf
from edgetune.errors import EdgetuneError
from edgetune.inputs.base import load_tokenizer
from edgetune.results import FileCheck, ModelAnswers, SmokeResult, TaskVerdict, TrainResult

TURN_TOKENS = ["<start_of_turn>", "<end_of_turn>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def _all_turns_model(base, dest):
    """`base` with every named template's turn tokens in its vocabulary (embeddings resized),
    converted to an F16 GGUF: one file whose vocabulary can render every template."""
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(str(base))
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>"] + TURN_TOKENS})
    model = AutoModelForCausalLM.from_pretrained(str(base))
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(dest / "hf")
    tok.save_pretrained(dest / "hf")
    convert_hf_to_gguf(dest / "hf", dest / "m.gguf", "f16")
    return tok, dest / "m.gguf"


@pytest.fixture(scope="module", params=["bos", "no-bos"])
def turns_model(request, tiny_base, tiny_bos_base, tmp_path_factory):
    base = tiny_bos_base if request.param == "bos" else tiny_base
    return _all_turns_model(base, tmp_path_factory.mktemp(f"turns-{request.param}"))


@pytest.mark.parametrize("name", list(templates.TEMPLATES))
def test_chat_path_ids_equal_hf_ids_bos_once(turns_model, name):
    from llama_cpp import Llama

    tok, gguf = turns_model
    chosen = templates.choose(name, tok)
    tok.chat_template = chosen.jinja
    llm = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    formatter = smoke.chat_formatter(llm, chosen.jinja)
    bos_in_front = templates.adds_bos(tok)
    go = templates.go_template(chosen, tok)
    for label, messages in templates.PROBES.items():
        hf = hf_eval.chat_ids(tok, messages)
        ours = smoke.chat_ids(llm, formatter, messages)
        assert smoke.first_difference(llm, label, ours, hf) is None
        assert ours.count(tok.bos_token_id) == (1 if bos_in_front else 0)  # never twice, never lost
        assert (ours[0] == tok.bos_token_id) == bos_in_front
        # Ollama adds BOS itself (the GGUF's add_bos flag); its template renders the rest alike.
        ollama = (tok.bos_token if bos_in_front else "") + templates.render_go(go, messages)
        assert ollama == formatter(messages=messages).prompt
        # Training renders the same text the chat path tokenizes.
        assert templates.render(chosen.jinja, messages, tok, True) == formatter(messages=messages).prompt


def test_training_ids_are_chat_path_ids(tiny_bos_base, tmp_path):
    """The row the model trains on starts with the prompt the chat path sends, BOS included."""
    from edgetune import data

    tok = load_tokenizer(str(tiny_bos_base))
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"instruction": "Say hi", "input": "to Sven", "output": "hi Sven"}) + "\n")
    chosen = templates.choose("alpaca", tok)
    ex = data.to_examples(data.load_dataset(path), tok, chosen)[0]
    row = data.tokenize([ex], tok, 128)[0]
    tok.chat_template = chosen.jinja
    prompt = hf_eval.chat_ids(tok, ex.messages)
    assert row["input_ids"][: len(prompt)] == prompt and prompt[0] == tok.bos_token_id
    assert row["input_ids"].count(tok.bos_token_id) == 1
    assert row["input_ids"][-1] == tok.eos_token_id  # the alpaca turn ends at EOS


def test_a_template_is_compiled_once_not_per_row(tiny_base, tmp_path):
    """Compiling costs ~30x rendering a row: 100k rows compiled one by one took minutes."""
    from edgetune import data

    tok = load_tokenizer(str(tiny_base))
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Say {i}", "output": str(i)}) + "\n" for i in range(50)))
    chosen = templates.choose("alpaca", tok)
    templates._compiled.cache_clear()
    rendered = data.to_examples(data.load_dataset(path), tok, chosen)
    assert len(rendered) == 50 and templates._compiled.cache_info().misses == 1


def test_auto_picks_model_then_family_then_alpaca(tiny_base):
    tok = load_tokenizer(str(tiny_base))
    assert templates.choose("auto", tok).name == "chatml"  # the model's own (ChatML) template
    tok.chat_template = None
    assert templates.choose("auto", tok).name == "chatml"  # no template, ChatML tokens in the vocabulary
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<start_of_turn>", "<end_of_turn>"]})
    assert templates.choose("auto", tok).name == "gemma"
    plain = load_tokenizer(str(tiny_base))
    plain.chat_template = None
    vocab = plain.get_vocab()
    plain.get_vocab = lambda: {k: v for k, v in vocab.items() if k not in ("<|im_start|>", "<|im_end|>")}
    chosen = templates.choose("auto", plain)
    assert chosen.name == "alpaca" and "no turn tokens" in chosen.reason


def test_template_errors_are_one_line(tiny_base, tmp_path):
    tok = load_tokenizer(str(tiny_base))
    with pytest.raises(EdgetuneError, match=r"gemma needs the tokens <start_of_turn>, <end_of_turn>"):
        templates.choose("gemma", tok, "tiny")
    tok.chat_template = None
    with pytest.raises(EdgetuneError, match="tiny has no chat template"):
        templates.choose("model", tok, "tiny")
    with pytest.raises(EdgetuneError, match="no such file"):
        templates.choose(str(tmp_path / "missing.jinja"), tok)
    bad = tmp_path / "never_stops.jinja"
    bad.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(EdgetuneError, match="no special token closes the assistant's turn"):
        templates.choose(str(bad), tok)
    own = tmp_path / "own.jinja"
    own.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}<|im_end|>{% endfor %}"
                   "{% if add_generation_prompt %}[assistant] {% endif %}")
    chosen = templates.choose(str(own), tok)
    assert chosen.turn_end == "<|im_end|>" and templates.go_template(chosen, tok) is None


def test_go_renderer_refuses_what_it_does_not_know():
    with pytest.raises(EdgetuneError, match="outside the subset"):
        templates.render_go("{{ range .Messages }}{{ .Content | upper }}{{ end }}", [])
    with pytest.raises(EdgetuneError, match="trim markers"):
        templates.render_go("{{- .System }}", [])


def test_modelfile_check_catches_a_wrong_template_and_stops(tiny_bos_base, tmp_path):
    """modelfile_problems fails on a TEMPLATE that drifts from the GGUF's and on missing stops."""
    from llama_cpp import Llama

    tok, gguf = _all_turns_model(tiny_bos_base, tmp_path)
    chosen = templates.choose("chatml", tok)
    llm = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    formatter = smoke.chat_formatter(llm, chosen.jinja)
    tok.chat_template = chosen.jinja
    stop_ids = [tok.eos_token_id]
    ref = type("Ref", (), {"stop_ids": stop_ids})()
    good = tmp_path / "Modelfile"
    good.write_text(report.modelfile("m.gguf", tok, stop_ids))
    assert smoke.modelfile_problems(good, formatter, llm, ref) == []
    bad = tmp_path / "Bad"
    bad.write_text(good.read_text().replace("<|im_start|>assistant\n\"\"\"", "<|im_start|>assistant\n\n\"\"\"")
                   .replace('PARAMETER stop "<|im_end|>"\n', ""))
    problems = smoke.modelfile_problems(bad, formatter, llm, ref)
    assert any("stop" in p for p in problems) and any("TEMPLATE (one turn) differs" in p for p in problems)


def test_task_verdict_names_likely_causes():
    summary = SmokeResult(prompts=["p", "q"], expected=["a", "b"], base=ModelAnswers(["", ""], 0.0, 9.0),
                          hf=ModelAnswers(["", ""], 0.0, 8.9), files=[])
    train = TrainResult("lora", "cpu", "fp32", "b", "b", 1, 10, steps=12, seconds=1.0,
                        tokens={"responses_cut": 85, "count": 240, "max_length": 128, "p99": 210})
    task = report.task_verdict(summary, train, [3.0, 2.9, 2.8, 2.5, 2.2, 1.9])
    assert task.verdict == "no better than the base"  # accuracy 0% -> 0%, perplexity 9.0 -> 8.9
    reasons = " | ".join(task.reasons)
    assert "85 of 240 responses were cut at data.max_length 128" in reasons
    assert "answers nothing" in reasons and "still falling" in reasons and "only 12 optimizer steps" in reasons
    summary.hf.accuracy = 1.0
    assert report.task_verdict(summary, train, []).verdict == "good"
    summary.hf.accuracy, summary.hf.perplexity = 0.0, 4.0  # free text: perplexity shows the gain
    summary.expected = ["a long free-text answer that exact match could never judge fairly at all"] * 2
    assert report.task_verdict(summary, train, []).verdict == "good"


def test_verdict_lines_split_file_and_task():
    row = FileCheck("t-F16.gguf", "t-F16.gguf", 1, 16.0, False, ["chat template (one turn): token 0 is ..."])
    summary = SmokeResult([], [], ModelAnswers([], 0.0), ModelAnswers([], 0.0),
                          files=[row, FileCheck("t-Q8_0.gguf", "t-Q8_0.gguf", 1, 8.5, True)],
                          task=TaskVerdict("poor", [0.0, 0.0], [9.0, 8.9], 2.0, ["only 12 optimizer steps"]))
    file_line, task_line = report.verdict_lines(summary)
    assert file_line.startswith("file verdict: FAIL (1 of 2 files") and "t-F16.gguf: chat template" in file_line
    assert task_line.startswith("task verdict: poor") and "likely: only 12 optimizer steps" in task_line
