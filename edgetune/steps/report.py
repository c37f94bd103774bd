"""What a run leaves for people: report.md (two verdicts and the smoke table), and beside the GGUFs
an Ollama Modelfile and a model card.

Two verdicts, because they fail for different reasons and ask for different fixes:
  file  is each GGUF the model we trained, as consumers run it (logits, tokens, chat template, EOS)?
        A FAIL is a defect of the file: the run exits non-zero.
  task  did the held-out answers get better (accuracy where it measures, perplexity, answers that
        stop), base -> fine-tuned? poor / no better than the base says the likely cause and what to
        try, and the run still exits 0.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgetune.fsutil import write_text
from edgetune.inputs import templates
from edgetune.inputs.recipe import MIN_STEPS, Recipe, steps_advice
from edgetune.measure import hf_eval
from edgetune.results import SmokeResult, TaskVerdict, TrainResult
from edgetune.runs import RunFolder
from edgetune.use import serve as serve_mod

STILL_FALLING = 0.05  # last logged losses this much below the ones before: training had not settled
PLAUSIBLE_PPL = 100.0  # a response perplexity above this has not learned the responses, whatever it fell from
SHORT_ANSWER_WORDS = 8  # expected answers this short make exact-match accuracy a fair measure
MOSTLY = 0.5  # share of answers that must end on a stop token


def task_verdict(smoke: SmokeResult, train: TrainResult, losses: list[float],
                 recipe: Recipe | None = None) -> TaskVerdict:
    """Did training help on the held-out rows? 'good' only when the answers got better: held-out
    accuracy up where exact match can measure it (short expected answers, or any answer right),
    else response perplexity down to a plausible value; and the fine-tuned model and every file
    stop their answers (on a stop token) on most prompts. Otherwise 'no better than the base'
    (nothing improved) or 'poor' (something moved, not enough), with the likely causes, most
    likely first, each with what to try."""
    base, tuned = smoke.base, smoke.hf
    base_ppl, ppl = base.perplexity, tuned.perplexity
    accuracy_up = tuned.accuracy > base.accuracy
    ppl_down = base_ppl is not None and ppl is not None and ppl < 0.95 * base_ppl
    measurable = bool(smoke.expected) and (
        max(base.accuracy, tuned.accuracy) > 0
        or sum(len(e.split()) for e in smoke.expected) / len(smoke.expected) <= SHORT_ANSWER_WORDS)
    better = accuracy_up if measurable else (ppl_down and ppl is not None and ppl <= PLAUSIBLE_PPL)
    stops = _stop_shares(smoke)
    stop = all(share >= MOSTLY for _, share, _ in stops)
    reasons = []
    tokens = train.tokens
    if tokens.get("responses_cut"):
        reasons.append(f"{tokens['responses_cut']} of {tokens['count']} responses were cut at data.max_length "
                       f"{tokens['max_length']} (p99 length {tokens.get('p99')}): raise data.max_length")
    if not any(tuned.answers):
        reasons.append("the fine-tuned model answers nothing on the held-out prompts")
    for who, share, of in stops:
        if share < MOSTLY:
            reasons.append(f"answers never stop: {who} ended {round(share * of)} of {of} answers on a stop token "
                           "(it has not learned where an answer ends): train longer, or check that the responses "
                           "are complete")
            break
    rows = train.train_rows
    if recipe is not None and rows and (advice := steps_advice(recipe.train, rows)):
        reasons.append(advice)
    elif train.steps < MIN_STEPS:
        reasons.append(f"only {train.steps} optimizer steps{f' for {rows} rows' if rows else ''}: "
                       "lower train.batch_size or train.grad_accum, or raise train.epochs")
    if len(losses) >= 6:
        first, before, last = losses[0], sum(losses[-6:-3]) / 3, sum(losses[-3:]) / 3
        if last > first:
            reasons.append(f"the training loss rose ({first:.3f} -> {last:.3f}): lower train.lr")
        elif last < (1 - STILL_FALLING) * before:
            reasons.append(f"the training loss was still falling ({before:.3f} -> {last:.3f}): train longer")
        elif last > 0.98 * first:
            reasons.append(f"the training loss barely moved ({first:.3f} -> {last:.3f}): raise train.lr or train longer")
    if not measurable and ppl_down and ppl is not None and ppl > PLAUSIBLE_PPL:
        reasons.append(f"the response perplexity fell but is still {ppl:,.0f}: the model has not learned the responses")
    if measurable and not accuracy_up and ppl_down:
        reasons.append(f"held-out accuracy did not rise ({base.accuracy:.0%} -> {tuned.accuracy:.0%}) though the "
                       "response perplexity fell: the answers came closer but are not right yet: train longer "
                       "(train.epochs) or raise train.lr")
    if measurable and not accuracy_up and tuned.accuracy >= 1.0:
        reasons.append("the base model already answers every held-out prompt right")
    good = better and stop
    verdict = "good" if good else ("poor" if accuracy_up or ppl_down else "no better than the base")
    return TaskVerdict(verdict=verdict, accuracy=[base.accuracy, tuned.accuracy],
                       perplexity=[base_ppl, ppl], eval_loss=train.eval_loss,
                       reasons=[] if good else reasons or ["no likely cause found in the data or the loss curve"])


def _stop_shares(smoke: SmokeResult) -> list[tuple[str, float, int]]:
    """(who, share of answers that ended on a stop token, answers) for the fine-tuned model and each file
    that passed the file verdict (a failed file's answers say what is wrong with the file, not with training)."""
    shares = []
    if smoke.hf.stopped_at_eos is not None and smoke.hf.answers:
        shares.append(("the fine-tuned model", smoke.hf.stopped_at_eos / len(smoke.hf.answers), len(smoke.hf.answers)))
    for f in smoke.files:
        if f.answers and f.passed:
            shares.append((f.file, f.stopped_at_eos / len(f.answers), len(f.answers)))
    return shares


def verdict_lines(smoke: SmokeResult) -> list[str]:
    """The two verdicts in a line each (the CLI prints them, the TUI shows them)."""
    files, failed = smoke.files, smoke.failed()
    lines = [f"file verdict: {'PASS' if not failed else 'FAIL'} ({len(files) - len(failed)} of {len(files)} files "
             "are the trained model as consumers run them)"
             + ("" if not failed else f"; {failed[0].file}: {failed[0].problems[0]}")]
    task = smoke.task
    if task:
        base_ppl, ppl = task.perplexity
        numbers = (f"held-out accuracy {task.accuracy[0]:.0%} -> {task.accuracy[1]:.0%}"
                   + (f", response perplexity {base_ppl:.2f} -> {ppl:.2f}" if base_ppl is not None else ""))
        lines.append(f"task verdict: {task.verdict} ({numbers})"
                     + ("" if task.verdict == "good" else f"; likely: {'; '.join(task.reasons)}"))
    return lines


def report(recipe: Recipe, train: TrainResult, smoke: SmokeResult, answers_of: str | None = None) -> str:
    """report.md; the answers shown are those of the GGUF file `answers_of` (the recommended one), else of
    the last file smoke-tested."""
    lines = [f"# edgetune run `{recipe.name}`", "",
             f"- base: `{recipe.base}`; data: `{recipe.data.path}`; chat template: {train.template or 'none'}",
             f"- {train.method} on {train.device} ({train.dtype}), {train.steps} steps, "
             f"{train.seconds} s; trainable {train.trainable_params:,} of {train.total_params:,} params",
             f"- eval loss {_num(train.eval_loss, '.4f')}, perplexity {_num(train.eval_perplexity, '.3f')}", ""]
    lines += [f"**{line}**" for line in verdict_lines(smoke)] + [""]
    lines += [f"Perplexity is on the held-out responses; accuracy is exact match on {len(smoke.expected)} "
              "held-out prompts. Chat path: the file's own template rendered as llama-cpp-python's chat completion "
              "does, token ids and answers compared with the training format.", "",
              f"| file | size MiB | bits/w | ppl (HF {smoke.hf.perplexity:.3f}) | logits NMSE | agree HF | accuracy "
              "| stops at EOS | chat path | prompt tok/s | gen tok/s | file verdict |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in smoke.files:
        lines.append(
            f"| {f.file} | {f.bytes / 2**20:.2f} | {f.bits_per_weight:.2f} | {f.perplexity:.3f} | "
            f"{f.nmse:.2e} | {f.agreement:.0%} | {f.accuracy:.0%} | "
            f"{f.stopped_at_eos}/{len(f.answers)} | {f.chat_path} | {f.prompt_tokens_per_s or 0:.0f} | "
            f"{f.gen_tokens_per_s or 0:.0f} | {'pass' if f.passed else 'FAIL: ' + '; '.join(f.problems)} |")
    best = next((f for f in smoke.files if f.file == answers_of), smoke.files[-1])
    lines += ["", f"## Answers of `{best.file}` on held-out prompts", "",
              "| prompt | expected | base | GGUF |", "|---|---|---|---|"]
    for p, e, b, a in zip(smoke.prompts, smoke.expected, smoke.base.answers, best.answers):
        lines.append(f"| {_cell(p)} | {_cell(e)} | {_cell(b)} | {_cell(a)} |")
    return "\n".join(lines) + "\n"


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:80]


def modelfile(target: str, tok, stop_ids: list[int]) -> str:
    """An Ollama Modelfile: the run's template in Ollama's Go form (Ollama adds BOS itself from the
    GGUF's flag), and a stop per token generation ends on."""
    lines = [f"FROM ./{target}"]
    if isinstance(getattr(tok, "chat_template", None), str):
        go = templates.go_template(templates.choose("model", tok), tok)
        if go is not None:
            lines.append(f'TEMPLATE """{go}"""')
    stops = list(dict.fromkeys(tok.convert_ids_to_tokens(i) for i in stop_ids))
    lines += [f'PARAMETER stop "{s}"' for s in stops] + ["PARAMETER temperature 0.7"]
    return "\n".join(lines) + "\n"


def write_model_files(folder: RunFolder, target: Path, tok, recipe: Recipe, template: str | None) -> None:
    """The Modelfile and README.md beside the GGUFs (`tok`: the merged folder's tokenizer)."""
    stop_ids = hf_eval.folder_stop_ids(folder.merged, tok, target)  # EOS, the turn end, llama.cpp's other stops
    write_text(folder.modelfile, modelfile(target.name, tok, stop_ids))
    t = recipe.train
    card = [f"# {recipe.name}", "", f"Fine-tuned from `{recipe.base}` on `{recipe.data.path}` with edgetune "
            f"(LoRA r={t.rank}, alpha={t.alpha}, targets {t.targets}, lr {t.lr}, {t.epochs} epochs).", "",
            "Files:", ""] + [f"- `{p.name}` ({p.stat().st_size / 2**20:.1f} MiB)" for p in folder.ggufs()] + [
            "", f"Prompt format: the chat template stored in the GGUF ({template or 'none: plain text completion'}).",
            "", f"Run: `ollama create {recipe.name} -f Modelfile`, or `edgetune chat {target.name}`.",
            "", "Serve it behind an OpenAI-compatible API (the run folder serves its recommended file):", "",
            f"    edgetune serve {folder.dir}", "",
            "then ask it from any OpenAI client, or:", "",
            "    " + serve_mod.curl_line(serve_mod.DEFAULT_HOST, serve_mod.DEFAULT_PORT, recipe.name)]
    write_text(folder.model_card, "\n".join(card) + "\n")


def train_losses(log_path: Path) -> list[float]:
    """The logged training losses in order (train_log.jsonl)."""
    if not log_path.is_file():
        return []
    losses = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record.get("loss"), (int, float)):
            losses.append(float(record["loss"]))
    return losses
