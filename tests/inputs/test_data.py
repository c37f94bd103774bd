import json

import pytest

from edgetune import data, templates
from edgetune.errors import EdgetuneError
from edgetune.inputs.base import load_tokenizer

ALPACA = [{"instruction": "Say hi", "input": "", "output": "hi"},
          {"instruction": "Add", "input": "1 2", "output": "3"}]
CHAT = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello"}]}]
TEXT = [{"text": "some plain text"}, {"text": "more text"}]


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize("rows,fmt", [(ALPACA, "alpaca"), (CHAT, "chat"), (TEXT, "text")])
@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet"])
def test_every_file_type_and_format(tmp_path, rows, fmt, kind):
    path = tmp_path / f"d.{kind}"
    if kind == "jsonl":
        write_jsonl(path, rows)
    elif kind == "json":
        path.write_text(json.dumps(rows))
    elif kind == "csv":
        import csv
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            for r in rows:
                w.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.Table.from_pylist(rows), path)
    ds = data.load_dataset(path)
    assert ds.format == fmt
    assert len(ds.rows) == len(rows)


def test_alpaca_renders_seed_template(tiny_base, tmp_path):
    tok = load_tokenizer(str(tiny_base))
    ds = data.load_dataset(write_jsonl(tmp_path / "a.jsonl", ALPACA))
    ex = data.to_examples(ds, tok, templates.choose("alpaca", tok))
    assert ex[0].prompt == "### Instruction:\nSay hi\n\n### Response:\n"
    assert ex[1].prompt == "### Instruction:\nAdd\n\n### Input:\n1 2\n\n### Response:\n"
    assert ex[1].completion == "3" + tok.eos_token  # the turn ends at EOS; the template's "\n\n" is not trained
    assert ex[1].answer == "3"


def test_chat_renders_with_template_and_masks_prompt(tiny_base, tmp_path):
    tok = load_tokenizer(str(tiny_base))
    ds = data.load_dataset(write_jsonl(tmp_path / "c.jsonl", CHAT))
    chosen = templates.choose("auto", tok)
    assert chosen.name == "chatml" and "own" in chosen.reason  # the model's template, recognised as ChatML
    ex = data.to_examples(ds, tok, chosen)[0]
    assert ex.prompt.endswith("<|im_start|>assistant\n") and "Be brief." in ex.prompt
    assert ex.completion.startswith("Hello") and ex.completion.endswith("<|im_end|>")
    row = data.tokenize([ex], tok, 256)[0]
    n_prompt = len(tok(ex.prompt, add_special_tokens=False)["input_ids"])
    assert row["completion_mask"][:n_prompt] == [0] * n_prompt
    assert all(row["completion_mask"][n_prompt:])
    assert row["input_ids"][-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert row["input_ids"].count(tok.convert_tokens_to_ids("<|im_end|>")) == 3  # three turns, no extra EOS


def test_truncation_counts_cut_and_lost_responses(tiny_base, tmp_path):
    tok = load_tokenizer(str(tiny_base))
    rows = [{"instruction": "x " * 200, "output": "y"},  # prompt alone is past 64: response lost
            {"instruction": "x " * 10, "output": "word " * 20},  # response partly cut
            {"instruction": "short", "output": "z"}]
    ds = data.load_dataset(write_jsonl(tmp_path / "t.jsonl", rows))
    tokens = data.tokenize(data.to_examples(ds, tok, templates.choose("alpaca", tok)), tok, 64)
    stats = data.token_stats(tokens, 64)
    assert stats.truncated == 2 and max(len(t["input_ids"]) for t in tokens) == 64
    assert stats.responses_cut == 2 and stats.responses_lost == 1
    assert stats.p99 == stats.max and stats.suggested_max_length() >= stats.p99
    assert stats.suggested_max_length() % 32 == 0


def test_prepare_stops_when_responses_are_lost(tiny_base, tmp_path):
    from edgetune.inputs.recipe import DataSpec
    tok = load_tokenizer(str(tiny_base))
    rows = [{"instruction": "x " * 80, "output": "y"}] * 3 + [{"instruction": "short", "output": "z"}] * 17
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    spec = DataSpec(path=str(path), max_length=64, eval_split=0.1)
    with pytest.raises(EdgetuneError) as e:
        data.prepare(spec, tok)
    assert "3 of 20 rows lose their whole response at data.max_length 64" in str(e.value)
    assert "data.allow_lost_responses" in str(e.value) and "\n" not in str(e.value)
    allowed = data.prepare(DataSpec(path=str(path), max_length=64, eval_split=0.1, allow_lost_responses=True), tok)
    assert allowed.lost == 3  # left out, never trained on
    assert all(r["response_kept"] for r in allowed.train_rows + allowed.eval_rows)
    assert len(allowed.train_rows) + len(allowed.eval_rows) == 17


def test_format_override(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "t", "instruction": "i", "output": "o"}])
    assert data.load_dataset(path).format == "alpaca"
    assert data.load_dataset(path, fmt="text").format == "text"


@pytest.mark.parametrize("content,message", [
    ('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": \n', "d.jsonl:2: malformed JSON"),
    ('{"instruction": "a"}\n', "d.jsonl:1: missing field 'output'"),
    ('{"instruction": "a", "output": 3}\n', "d.jsonl:1: field 'output' must be a string, got int"),
    ('{"instruction": "a", "output": "  "}\n', "d.jsonl:1: field 'output' is empty"),
    ('[1, 2]\n', "d.jsonl:1: expected a JSON object, got list"),
    ('{"foo": 1}\n', "d.jsonl:1: cannot tell the format"),
    ('\n\n  \n', "no rows"),
    ('{"messages": [{"role": "wizard", "content": "x"}]}\n', "d.jsonl:1: messages[0].role 'wizard'"),
    ('{"messages": [{"role": "user", "content": "x"}]}\n', "d.jsonl:1: no assistant turn"),
    ('{"messages": []}\n', "d.jsonl:1: field 'messages' must be a non-empty list"),
    ('{"text": ""}\n', "d.jsonl:1: field 'text' is empty"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, content, message):
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(EdgetuneError) as e:
        data.load_dataset(path)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_skip_bad_rows_counts_them(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a"}\n{"instruction": "c", "output": "d"}\n')
    ds = data.load_dataset(path, on_bad_row="skip")
    assert len(ds.rows) == 2 and len(ds.skipped) == 1 and "d.jsonl:2" in ds.skipped[0]


def test_file_level_errors(tmp_path):
    cases = {"empty.jsonl": b"", "bin.jsonl": b'{"text": "ok"}\n{"text": "\xff\xfe"}\n', "x.txt": b"hello"}
    expect = {"empty.jsonl": "file is empty", "bin.jsonl": "bin.jsonl:2: not UTF-8", "x.txt": "unknown dataset type"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(EdgetuneError, match=expect[name]):
            data.load_dataset(tmp_path / name)
    with pytest.raises(EdgetuneError, match="no such file"):
        data.load_dataset(tmp_path / "missing.jsonl")
    (tmp_path / "bad.csv").write_text("instruction,,output\na,b,c\n")
    with pytest.raises(EdgetuneError, match="bad.csv:1: bad CSV header"):
        data.load_dataset(tmp_path / "bad.csv")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(EdgetuneError, match="not a readable Parquet"):
        data.load_dataset(tmp_path / "bad.parquet")


def test_split_is_deterministic_and_keeps_an_eval_row():
    items = list(range(20))
    a = data.split(items, 0.1, seed=3)
    assert a == data.split(items, 0.1, seed=3)
    assert len(a[1]) == 2 and sorted(a[0] + a[1]) == items
    assert len(data.split(items[:5], 0.01)[1]) == 1


def test_data_columns_map_the_files_own_names(tmp_path):
    from edgetune import data
    from edgetune.inputs.recipe import from_dict

    csv_file = tmp_path / "qa.csv"
    csv_file.write_text("question,answer,notes\nreverse cat,tac,x\nreverse dog,god,\n")
    with pytest.raises(EdgetuneError, match="cannot tell the format .* map yours with data.columns"):
        data.load_dataset(csv_file)
    ds = data.load_dataset(csv_file, columns={"instruction": "question", "output": "answer"})
    assert ds.format == "alpaca" and ds.rows[1].record["instruction"] == "reverse dog"
    assert ds.rows[1].record["output"] == "god"
    with pytest.raises(EdgetuneError) as e:
        data.load_dataset(csv_file, columns={"instruction": "prompt", "output": "answer"})
    assert str(e.value) == (f"{csv_file}: data.columns.instruction is 'prompt', which is not a column of this file "
                            "(its columns: question, answer, notes)")
    gaps = tmp_path / "gaps.jsonl"
    gaps.write_text(json.dumps({"question": "a", "answer": "b"}) + "\n" + json.dumps({"question": "c"}) + "\n")
    with pytest.raises(EdgetuneError, match=r"gaps.jsonl:2: missing field 'answer' \(data.columns.output\)"):
        data.load_dataset(gaps, columns={"instruction": "question", "output": "answer"})
    assert data.suggest_columns(["question", "answer", "notes"]) == {"instruction": "question", "output": "answer"}
    assert data.suggest_columns(["instruction", "input", "output"]) == {}

    share = tmp_path / "sharegpt.jsonl"
    share.write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}))
    ds = data.load_dataset(share, columns={"messages": "conversations", "role_tag": "from", "content_tag": "value",
                                           "user_tag": "human", "assistant_tag": "gpt"})
    assert ds.format == "chat"
    assert ds.rows[0].record["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]

    assert from_dict({"data": {"columns": {"instruction": "question"}}}).data.columns == {"instruction": "question"}
    with pytest.raises(EdgetuneError, match="data.columns.question is not one of instruction, input, output"):
        from_dict({"data": {"columns": {"question": "instruction"}}})
    with pytest.raises(EdgetuneError, match=r"data.columns: expected a mapping"):
        from_dict({"data": {"columns": "question"}})
