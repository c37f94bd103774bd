"""Smoke test: does each GGUF we wrote answer like the model we trained, judged by llama.cpp itself?

For every GGUF (on the CPU, through llama-cpp-python):
  answers      greedy answers to held-out prompts; exact-match accuracy vs the dataset and agreement
               with the merged HF model's own greedy answers; generation must stop at EOS
  perplexity   on the eval rows under the GGUF and under HF
  logits NMSE  GGUF vs HF logits on the same tokens (the F16 file must be < 1e-4 to be our model)
  tokenizer    llama.cpp token ids == HF token ids on tricky strings
  chat path    the file's own chat template rendered as llama-cpp-python's chat completion does:
               prompt ids == HF apply_chat_template ids (one/two turns, with/without system), chat
               answers == training-format answers, generation stops on one of the file's
               end-of-generation ids, and the Modelfile's TEMPLATE and stops say the same
  speed        prompt and generation tokens/s
This is the *file* verdict: is this GGUF the model we trained, as consumers run it? Whether the
training helped is the task verdict (`task_verdict`).
"""
from __future__ import annotations

import gc
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import edgetune.threads as threads_mod
from edgetune.convert.filetypes import FILE_TYPES, by_ftype
from edgetune.errors import EdgetuneError
from edgetune.events import Callback, Event, ignore
from edgetune.inputs import gguf_io, templates
from edgetune.inputs.gguf_io import bits_per_weight, check_gguf_file
from edgetune.measure import gguf_eval, heldout, hf_eval, metrics
from edgetune.measure.heldout import Heldout
from edgetune.results import FileCheck, LogitCheck, ModelAnswers, QuantFile, QuantReference, QuantResult, SmokeResult

PARITY_STRINGS = [
    "Hello world", " leading space", "trailing space ", "multiple   spaces\tand\ttabs",
    "new\nlines\n\n\nand more", "digits 1234567890 3.14159", "Ünïcödé café naïve façade",
    "日本語のテキスト", "emoji 🙂🚀 mixed", "punctuation!?;:—\"quotes\" 'single'", "   ",
    "CamelCase snake_case kebab-case", "https://example.com/path?q=1&x=2",
]
NMSE_LIMIT_F16 = 1e-4  # the unquantized file must be our model
NMSE_LIMIT_8BIT = 1e-2  # Q8_0 of Gemma 3 270M after a bf16 LoRA fine-tune measured 6.0e-3; a broken file is ~1
PPL_RATIO_LIMIT = 1.5  # quantized perplexity / HF perplexity


@dataclass
class HFReference:
    """What the HF model says, computed once and compared against every GGUF."""

    prompt_ids: list[list[int]]
    answers: list[str]
    expected: list[str]
    eval_ids: list[list[int]]
    eval_masks: list[list[int]]  # 1 on the tokens perplexity is measured on (the responses)
    logits: list[np.ndarray]
    perplexity: float
    parity_ids: list[list[int]]
    eos_id: int | None
    special_strings: list[str]
    stop_ids: list[int]  # what HF generation stops on (EOS and the template's turn end)
    messages: list[list[dict]]  # the held-out prompts as conversations (the chat path)
    chat_template: str | None
    probe_ids: dict[str, list[int]]  # HF apply_chat_template ids of templates.PROBES
    stopped: int = 0  # of the HF answers, how many ended on a stop token


def _norm(s: str) -> str:
    return s.strip()


def hf_reference(hf_dir: str | Path, rows: Heldout, max_tokens: int, on_event: Callback = ignore,
                 tokenizer=None, gguf_file: str | Path | None = None, known: ModelAnswers | None = None) -> HFReference:
    """The merged HF model on `rows`: its answers, logits and perplexity, and the tokenizer's ids
    of the parity strings and chat probes. Given one of the run's GGUFs, its answers stop wherever
    llama.cpp stops (hf_eval.folder_stop_ids). `known`: its answers and perplexity on these rows from
    the quantize step, which compared every file's logits with its own: the model is not run again
    (and the reference has no logits)."""
    from transformers import AutoTokenizer

    tok = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(str(hf_dir))
    stops = hf_eval.folder_stop_ids(hf_dir, tok, gguf_file)
    if known is not None:
        out = hf_eval.Outputs(known.answers, known.stopped_at_eos or 0, [], known.perplexity)
    else:
        model = hf_eval.load(hf_dir)
        try:
            out = hf_eval.outputs(model, tok, rows, max_tokens, stops)
        finally:
            del model
            gc.collect()  # an HF model holds reference cycles: its weights would wait for the next collection
    specials = [s for s in (tok.eos_token, tok.bos_token) if s]
    parity_texts = PARITY_STRINGS + [f"{s}text{s} more" for s in specials]
    parity_ids = [tok(s, add_special_tokens=False)["input_ids"] for s in parity_texts]
    template = tok.chat_template if isinstance(getattr(tok, "chat_template", None), str) else None
    probe_ids = {name: hf_eval.chat_ids(tok, m) for name, m in templates.PROBES.items()} if template else {}
    on_event(Event("smoke", "log", f"HF reference: {len(rows.prompts)} prompts, {len(rows.ids)} eval rows"
                   + (" (answers and logits from the quantize step)" if known is not None else "")))
    return HFReference(rows.prompts, out.answers, rows.expected, rows.ids, rows.masks, out.logits, out.perplexity,
                       parity_ids, tok.eos_token_id, parity_texts, stops, rows.messages, template, probe_ids,
                       out.stopped)


def check_gguf(path: str | Path, ref: HFReference, max_tokens: int, threads: int = 0,
               on_event: Callback = ignore, modelfile: Path | None = None,
               answered: tuple[list[str], int] | None = None, checked: LogitCheck | None = None) -> FileCheck:
    """All smoke measures for one GGUF file, and its verdict. `answered`: the file's greedy answers
    to ref's prompts and how many stopped, and `checked`: its logits against HF's on ref's rows, when
    the quantize step has made them already."""
    path = Path(path)
    llm = gguf_eval.load(path, gguf_eval.n_ctx(ref.eval_ids + ref.prompt_ids, max_tokens), threads)
    ftype = llm.metadata.get("general.file_type", "")
    row: dict = {"file": path.name, "path": str(path), "bytes": path.stat().st_size,
                 "bits_per_weight": round(bits_per_weight(path), 3), "file_type": ftype}
    row |= _logit_figures(checked or _evaluate(llm, ref), ref)
    answers, stopped = answered or gguf_eval.answers(llm, ref.prompt_ids, max_tokens)
    row |= _answer_figures(llm, ref, answers, stopped)
    row |= _tokenizer_figures(llm, ref)
    chat_problems = chat_path(llm, ref, answers, max_tokens, row, modelfile)
    del llm
    row["problems"] = chat_problems + _problems(row, ref, path, ftype)
    row["passed"] = not row["problems"]
    check = FileCheck(**row)
    on_event(Event("smoke", "metric", f"{path.name}: {'PASS' if check.passed else 'FAIL'} "
                   f"ppl {check.perplexity:.3f} (HF {ref.perplexity:.3f}), nmse {check.nmse:.2e}, "
                   f"agree {check.agreement:.0%}, acc {check.accuracy:.0%}, "
                   f"{check.gen_tokens_per_s or 0:.0f} tok/s", data=row))
    return check


def _evaluate(llm, ref: HFReference) -> LogitCheck:
    """The file's logits on the eval rows against HF's."""
    tally = gguf_eval.LogitTally(ref.logits)
    for ids, mask in zip(ref.eval_ids, ref.eval_masks):
        t0 = time.perf_counter()
        logits = gguf_eval.logits(llm, ids)
        tally.add(logits, ids, mask, time.perf_counter() - t0)
    return tally.check()


def _logit_figures(check: LogitCheck, ref: HFReference) -> dict:
    """Logits against HF's on the eval rows: finite, NMSE, perplexity, prompt speed."""
    return {"finite": check.finite, "nmse": check.nmse, "perplexity": check.perplexity,
            "hf_perplexity": ref.perplexity, "prompt_tokens_per_s": check.prompt_tokens_per_s}


def _answer_figures(llm, ref: HFReference, answers: list[str], stopped: int) -> dict:
    """Greedy answers to the training-format prompts against HF's and the dataset's; decode speed."""
    n = max(len(answers), 1)
    return {"answers": answers, "stopped_at_eos": stopped,
            "gen_tokens_per_s": gguf_eval.generation_speed(llm, ref.eval_ids[0][:16] if ref.eval_ids else [0]),
            "agreement": sum(a == b for a, b in zip(answers, ref.answers)) / n,
            "accuracy": sum(a == b for a, b in zip(answers, ref.expected)) / n,
            "empty_answers": sum(not a for a in answers)}


def _tokenizer_figures(llm, ref: HFReference) -> dict:
    """Tokenizer parity with HF on the parity strings, EOS, and whether the file carries a template."""
    mismatches = []
    # SentencePiece with a space prefix: for text that starts with white space, transformers 5 and
    # sentencepiece (which llama.cpp follows) disagree on the prefix; such strings prove nothing.
    spm_prefix = llm.metadata.get("tokenizer.ggml.model") == "llama" and \
        llm.metadata.get("tokenizer.ggml.add_space_prefix", "true") == "true"
    specials = [t for t in (llm.token_eos(), llm.token_bos()) if t is not None and t >= 0]
    for text, want in zip(ref.special_strings, ref.parity_ids):
        if spm_prefix and text[:1].isspace():
            continue
        got = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if spm_prefix and any(t in want for t in specials):
            # llama.cpp also prefixes the text after each special token (sentencepiece "legacy"
            # behaviour); check that the special tokens themselves are recognised.
            got, want = [t for t in got if t in specials], [t for t in want if t in specials]
        if got != want:
            mismatches.append(text)
    return {"tokenizer_mismatches": mismatches, "eos_id": llm.token_eos(),
            "eos_matches": ref.eos_id is None or llm.token_eos() == ref.eos_id,
            "chat_template": bool(llm.metadata.get("tokenizer.chat_template"))}


def _problems(row: dict, ref: HFReference, path: Path, ftype) -> list[str]:
    """What fails the file, from its figures: the thresholds of the smoke verdict."""
    problems = []
    finite, answers, mismatches = row["finite"], row["answers"], row["tokenizer_mismatches"]
    if not finite:
        problems.append("logits are not finite")
    if answers and row["empty_answers"] == len(answers) and any(ref.answers):
        problems.append("every answer is empty (the HF model answers)")
    exact = _is_unquantized(path, ftype)
    limit = NMSE_LIMIT_F16 if exact else NMSE_LIMIT_8BIT if _is_8bit(path, ftype) else None
    if finite and limit is not None and row["nmse"] > limit:
        problems.append(f"logits NMSE {row['nmse']:.2e} > {limit:g}")
    if finite and limit is None and row["perplexity"] > PPL_RATIO_LIMIT * ref.perplexity:
        problems.append(f"perplexity {row['perplexity']:.2f} > {PPL_RATIO_LIMIT}x HF's {ref.perplexity:.2f}")
    if mismatches:
        problems.append(f"tokenizer differs from HF on {len(mismatches)} strings (first {mismatches[0]!r})")
    if not row["eos_matches"]:
        problems.append(f"EOS id {row['eos_id']} != HF {ref.eos_id}")
    return problems


def chat_formatter(llm, template: str | None = None):
    """The formatter llama-cpp-python's create_chat_completion builds from the file's template
    (or from `template` with the file's BOS and EOS texts)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def text(token: int) -> str:
        return llm.detokenize([token], special=True).decode("utf-8", errors="replace") if token >= 0 else ""

    return Jinja2ChatFormatter(template=template or llm.metadata["tokenizer.chat_template"], eos_token=text(llm.token_eos()),
                               bos_token=text(llm.token_bos()), stop_token_ids=[llm.token_eos()])


def chat_ids(llm, formatter, messages: list[dict]) -> list[int]:
    """The prompt ids of the chat path: rendered, then tokenized without adding BOS (as the
    chat handler does, because the formatter says its text carries its own special tokens)."""
    result = formatter(messages=messages)
    return llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)


def first_difference(llm, label: str, ours: list[int], want: list[int]) -> str | None:
    """One line naming where two id lists part, or None when they are equal."""
    if ours == want:
        return None
    i = next((k for k in range(min(len(ours), len(want))) if ours[k] != want[k]), min(len(ours), len(want)))

    def show(ids: list[int]) -> str:
        if i >= len(ids):
            return f"(ends after {len(ids)} tokens)"
        return f"{ids[i]} {llm.detokenize([ids[i]], special=True).decode('utf-8', errors='replace')!r}"

    return f"{label}: token {i} is {show(ours)} in llama.cpp, {show(want)} in HF"


def chat_path(llm, ref: HFReference, answers: list[str], max_tokens: int, row: dict,
              modelfile: Path | None) -> list[str]:
    """The consumer's door: the file's own chat template through llama-cpp-python's chat path."""
    import llama_cpp

    problems = []
    vocab = llm._model.vocab
    for token in ref.stop_ids:
        if not llama_cpp.llama_vocab_is_eog(vocab, token):
            problems.append(f"HF stops on {token} {llm.detokenize([token], special=True).decode(errors='replace')!r}, "
                            "which the file does not treat as end of generation")
    if not ref.chat_template:
        row["chat_path"] = "no chat template (plain completion)"
        return problems
    if "tokenizer.chat_template" not in llm.metadata:
        return problems + ["the chat template was lost in the GGUF"]
    formatter = chat_formatter(llm)
    for name, want in ref.probe_ids.items():
        diff = first_difference(llm, f"chat template ({name})", chat_ids(llm, formatter, templates.PROBES[name]), want)
        if diff:
            problems.append(diff)
    chat_answers = []
    for k, (messages, ids) in enumerate(zip(ref.messages, ref.prompt_ids)):
        diff = first_difference(llm, f"chat prompt {k + 1} vs training format", chat_ids(llm, formatter, messages), ids)
        if diff:
            problems.append(diff)
            continue
        llm.reset()
        with gguf_eval.last_logits_only(llm):
            out = llm.create_chat_completion(messages=messages, temperature=0.0, top_k=1, max_tokens=max_tokens)
        chat_answers.append(_norm(out["choices"][0]["message"]["content"] or ""))
        if chat_answers[-1] != answers[k]:
            problems.append(f"chat prompt {k + 1}: the chat path answers {chat_answers[-1][:40]!r}, "
                            f"the training format {answers[k][:40]!r}")
    row["chat_answers"] = chat_answers
    row["chat_path"] = "ok" if not problems else "FAIL"
    if modelfile is not None and modelfile.is_file():
        problems += modelfile_problems(modelfile, formatter, llm, ref)
    return problems


def modelfile_problems(path: Path, formatter, llm, ref: HFReference) -> list[str]:
    """The Modelfile must stop where the model stops and render what the GGUF template renders
    (Ollama adds BOS itself, from the file's add-BOS flag)."""
    text = path.read_text(encoding="utf-8")
    problems = []
    stops = set(re.findall(r'^PARAMETER stop "(.*)"$', text, re.M))
    want = {llm.detokenize([t], special=True).decode("utf-8", errors="replace") for t in ref.stop_ids}
    if stops != want:
        problems.append(f"{path.name}: stop {sorted(stops)} != the model's stop tokens {sorted(want)}")
    m = re.search(r'^TEMPLATE """(.*?)"""$', text, re.M | re.S)
    if m is None:
        return problems
    bos = formatter.bos_token if llm.metadata.get("tokenizer.ggml.add_bos_token") == "true" else ""
    for name, messages in templates.PROBES.items():
        ollama = bos + templates.render_go(m.group(1), messages)
        gguf_text = formatter(messages=messages).prompt
        if ollama != gguf_text:
            i = next((k for k in range(min(len(ollama), len(gguf_text))) if ollama[k] != gguf_text[k]),
                     min(len(ollama), len(gguf_text)))
            problems.append(f"{path.name}: TEMPLATE ({name}) differs from the GGUF template at character {i}: "
                            f"{ollama[i:i + 20]!r} vs {gguf_text[i:i + 20]!r}")
    return problems


def _file_type(path: Path, ftype):
    """The registry entry from general.file_type, else from the file name's -TYPE suffix."""
    return by_ftype(ftype) or FILE_TYPES.get(path.stem.rsplit("-", 1)[-1].upper())


def _is_unquantized(path: Path, ftype) -> bool:
    t = _file_type(path, ftype)
    return bool(t) and t.unquantized


def _is_8bit(path: Path, ftype) -> bool:
    t = _file_type(path, ftype)
    return bool(t) and t.name == "Q8_0"


def smoke_run(merged: Path, base_path: str, files: list[Path], recipe, modelfile: Path | None,
              on_event: Callback = ignore, tok=None, quant: QuantResult | None = None) -> SmokeResult:
    """The smoke step of a run: the merged HF model is the reference, every GGUF is checked against
    it on the first smoke.prompts held-out rows. What the quantize step measured on the same rows
    (`quant`) is not measured again: the base model's figures, which say what training changed (computed
    here when absent), the merged model's answers and perplexity, and each file's greedy answers and
    logits against the merged model's. `tok` is the merged folder's tokenizer when the caller has it
    loaded already."""
    from transformers import AutoTokenizer

    spec = recipe.smoke
    threads = threads_mod.log_choice("smoke", threads_mod.for_recipe(recipe, measurements=True), on_event, "threads")
    threads_mod.set_torch_threads(threads)  # the HF reference and the base's figures run in torch
    if tok is None:
        tok = AutoTokenizer.from_pretrained(str(merged))
    prepared = heldout.split(recipe, merged, tok)
    if not prepared.eval:
        raise EdgetuneError(f"{recipe.data.path}: no held-out rows to smoke-test with (data.eval_split is 0)")
    rows = heldout.rows(prepared.eval, tok, recipe.data.max_length, spec.prompts).first(spec.prompts)
    seconds = {}
    reusable = _reusable(quant, files)
    answered = {r.file: (r.answers, r.stopped_at_eos) for r in reusable if r.answers}
    checked = {r.file: r.logit_check for r in reusable if r.logit_check and r.logit_check.rows == len(rows.ids)}
    known = quant.hf if quant is not None and all(Path(f).name in checked for f in files) else None
    t0 = time.perf_counter()
    ref = hf_reference(merged, rows, spec.max_tokens, on_event, tokenizer=tok, gguf_file=files[0] if files else None,
                       known=known)
    seconds["reference"] = time.perf_counter() - t0
    base = quant.base if quant is not None else None
    if base is None or not base.row_tokens:  # not measured by the quantize step (an older run folder)
        t0 = time.perf_counter()
        base = hf_eval.base_figures(base_path, rows, tok, ref.stop_ids, spec.max_tokens)
        seconds["base"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    checks = smoke(files, ref, spec.max_tokens, threads, on_event, modelfile, answered, checked)
    seconds["files"] = time.perf_counter() - t0
    return SmokeResult(
        prompts=[tok.decode(ids, skip_special_tokens=True) for ids in ref.prompt_ids], expected=ref.expected,
        base=ModelAnswers(base.answers, accuracy(base.answers, ref.expected), base.perplexity_over(len(ref.eval_ids)),
                          base.stopped_at_eos),
        hf=ModelAnswers(ref.answers, accuracy(ref.answers, ref.expected), ref.perplexity, ref.stopped),
        files=checks, seconds={k: round(v, 2) for k, v in seconds.items()})


def _reusable(quant: QuantResult | None, files: list[Path]) -> list[QuantReference | QuantFile]:
    """The quantize step's records (its reference and measured files) of `files`, each still the file it
    measured (a record of an older edgetune has no stamp, and is trusted as before)."""
    if quant is None or quant.reference is None:
        return []
    on_disk = {Path(f).name: Path(f) for f in files}
    records = [quant.reference] + [f for f in quant.files if f.measured]
    return [r for r in records if r.file in on_disk and not _changed(r.logit_check, on_disk[r.file])]


def _changed(check: LogitCheck | None, path: Path) -> bool:
    return check is not None and bool(check.stamp) and path.is_file() and gguf_io.stamp(path) != check.stamp


def accuracy(answers: list[str], expected: list[str]) -> float:
    """Exact-match share of `answers` against `expected` (0 when there is nothing to match)."""
    return metrics.accuracy(answers, expected) or 0.0


def smoke(ggufs: list[Path], ref: HFReference, max_tokens: int, threads: int = 0,
          on_event: Callback = ignore, modelfile: Path | None = None,
          answered: dict[str, tuple[list[str], int]] | None = None,
          checked: dict[str, LogitCheck] | None = None) -> list[FileCheck]:
    """check_gguf on every file; `answered` and `checked` map a file name to its answers and its logits
    against HF's, already measured."""
    on_event(Event("smoke", "start", f"smoke-testing {len(ggufs)} GGUF files", total=len(ggufs)))
    rows = []
    for i, path in enumerate(ggufs, 1):
        name = Path(path).name
        rows.append(check_gguf(path, ref, max_tokens, threads, on_event, modelfile, (answered or {}).get(name),
                               (checked or {}).get(name)))
        on_event(Event("smoke", "progress", Path(path).name, step=i, total=len(ggufs)))
    return rows


def require_pass(rows: list[FileCheck], offered: Path | None = None) -> None:
    """Raise on any failed file, naming the file that passed and is offered instead (`offered`)."""
    failed = [r for r in rows if not r.passed]
    if failed:
        passed = {Path(r.path).name for r in rows if r.passed}
        instead = (f"; {offered.name} passed: chat and serve open it" if offered is not None and offered.name in passed
                   else "")
        raise EdgetuneError("; ".join(f"{r.path}: {', '.join(r.problems)}" for r in failed) + instead)


QUICK_PROMPT = "### Instruction:\nWhat is the last word of: red fox tiger\n\n### Response:\n"


def quick_check(path: str | Path, lora: Path | None = None, prompt: str = QUICK_PROMPT, max_tokens: int = 32,
                threads: int = 0) -> dict:
    """Loads in llama.cpp (with `lora` applied if given), finite logits, generates; records the greedy
    answer and whether it stopped at EOS (reported, not required: an adapter need not answer this
    prompt). With `lora`, also that the adapter really changed the logits
    (llama.cpp reports a failed adapter load by a falsy pointer, not an error)."""
    from llama_cpp import Llama


    path = Path(path)
    check_gguf_file(path)
    if lora is not None:
        check_gguf_file(Path(lora))
    kwargs = dict(n_ctx=256, logits_all=True, verbose=False, seed=0, n_threads=threads_mod.resolve(threads))
    row: dict = {"file": str(lora or path), "problems": []}
    try:
        llm = Llama(model_path=str(path), lora_path=str(lora) if lora else None, **kwargs)
    except Exception as e:
        row["problems"].append(f"llama.cpp could not load it ({str(e).splitlines()[0]})")
        row["passed"] = False
        return row
    ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    llm.eval(ids)
    logits = np.array(llm.scores[len(ids) - 1], dtype=np.float32)
    if not np.isfinite(logits).all():
        row["problems"].append("logits are not finite")
    llm.reset()
    out = llm.create_completion(ids, max_tokens=max_tokens, temperature=0.0, top_k=1)
    row["answer"] = out["choices"][0]["text"].strip()
    row["generated_tokens"] = out["usage"]["completion_tokens"]
    row["stopped_at_eos"] = out["choices"][0].get("finish_reason") == "stop"
    del llm
    if lora is not None:
        plain = Llama(model_path=str(path), **kwargs)
        plain.eval(ids)
        base_logits = np.array(plain.scores[len(ids) - 1], dtype=np.float32)
        if np.allclose(base_logits, logits, atol=1e-6):
            row["problems"].append("the adapter did not change the logits (not applied?)")
        del plain
    row["passed"] = not row["problems"]
    return row
