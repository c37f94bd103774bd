"""The command line: one verb per pipeline step, plus run/demo/chat. `edgetune` alone opens the TUI."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import click
import typer
from typer.core import TyperGroup

from edgetune import (
    DataSpec,
    EdgetuneError,
    Event,
    RunFolder,
    TrainMetrics,
    __version__,
    cache_dir,
    gguf_of,
    hub,
    list_runs,
    logs,
    pipeline,
    progress_line,
    report_html,
    resolve_base,
    run_batch,
)
from edgetune import chat as chat_mod
from edgetune import data as data_mod
from edgetune import merge as merge_mod
from edgetune import quantize as quantize_mod
from edgetune import recipe as recipe_mod
from edgetune import serve as serve_mod
from edgetune import threads as threads_mod
from edgetune.convert import convert_hf_to_gguf

EPILOG = """\b
Examples:
  edgetune                                  open the terminal UI
  edgetune demo                             the whole pipeline on the built-in demo, headless
  edgetune data inspect data.jsonl          validate a dataset, show its format and token lengths
  edgetune train --recipe recipes/demo.yaml fine-tune (QLoRA on CUDA, LoRA on CPU)
  edgetune run --recipe recipes/demo.yaml   train, merge, convert, quantize and smoke-test
  edgetune convert runs/demo/merged out.gguf --outtype f16
  edgetune quantize out.gguf out-Q4_K_M.gguf --type Q4_K_M
  edgetune chat runs/demo/gguf/demo-Q4_K_M.gguf
  edgetune serve runs/demo                  an OpenAI-compatible API on 127.0.0.1:8000
  edgetune runs                             the runs under runs/, newest first
  edgetune report runs/demo --open          rebuild report.md and report.html, open the page
  edgetune batch adapters/ --quant Q4_K_M,Q8_0 --out gguf/
"""

class OneLineErrors(TyperGroup):
    """The one place user errors are caught: every EdgetuneError a command raises ends as one line
    on stderr and exit 2 (`--debug` shows the traceback instead)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgetuneError as e:
            if STATE["debug"]:
                raise
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as e:  # Ctrl-C: here, or typer ends it as a bare exit 130
            interrupted(e)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=False, epilog=EPILOG,
                  rich_markup_mode=None,
                  help="From a dataset and a base model to a tested, quantized GGUF that runs on a CPU.")
data_app = typer.Typer(help="Dataset tools.")
app.add_typer(data_app, name="data")
STATE = {"debug": False}


class CliRenderer:
    """Renders core events as log lines and one progress line per phase."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self._open_line = False

    def __call__(self, e: Event) -> None:
        if e.kind == "progress":
            bar = ""
            if e.step is not None and e.total:
                filled = int(24 * min(e.step, e.total) / e.total)
                bar = f"{'#' * filled}{'.' * (24 - filled)} "
            line = f"[{e.phase}] {bar}{progress_line(e)}"
            if self.tty:
                self.stream.write("\r\x1b[2K" + line[: os.get_terminal_size().columns - 1])
                self._open_line = True
            elif isinstance(e, TrainMetrics) or (e.step or 0) == (e.total or -1):
                self.stream.write(line + "\n")
        else:
            if self._open_line:
                self.stream.write("\n")
                self._open_line = False
            if e.message:
                self.stream.write(f"[{e.phase}] {e.message}\n")
        self.stream.flush()


def _log_libraries(log_file: Path, hf: bool = True, llama: bool = True) -> None:
    """Library logs and warnings go to `log_file`; the console keeps edgetune's lines (--debug: both)."""
    logs.route(log_file, debug=STATE["debug"], hf=hf, llama=llama)


def _command_log(command: str) -> Path:
    return cache_dir() / "logs" / f"{command}.log"


NAME_HELP = "Run name: the folder runs/<name>/ (letters, digits, '.', '_', '-'; default: the recipe's, else 'run')."
BASE_HELP = "Base model: demo, gemma3-270m, a Hugging Face folder, a .gguf file or a hub id (org/model)."
DATA_HELP = "Dataset: demo, a .jsonl/.json/.csv/.parquet file or a hub id; alpaca, chat or text rows."
THREADS_HELP = "Threads of every heavy step (default 0: as many as there are CPUs free; the recipe's threads key)."
CPU_THREADS_HELP = "llama.cpp threads (0: as many as there are CPUs free)."


def _load_recipe(recipe: Optional[Path], name: Optional[str], base: Optional[str], data: Optional[str],
                 check: bool = True, threads: Optional[int] = None):
    """The recipe with the options over it, validated; with `check`, its inputs too (the dataset read
    and validated, too few optimizer steps warned about), all before the run folder is made."""
    r = recipe_mod.load(recipe) if recipe else recipe_mod.Recipe()
    if threads is not None:
        r.threads = threads
    if name is not None:  # --name "" is a bad name, not no name
        r.name = name
    if base is not None:
        r.base = base
    if data is not None:
        r.data.path = data
    r = recipe_mod.validate(r, str(recipe or "options"))
    hub.check_ids(models=[r.base], datasets=[r.data.path])  # before the run folder is made
    if check:
        pipeline.check_inputs(r, CliRenderer())
    return r


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgetune {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def root(ctx: typer.Context, debug: bool = typer.Option(False, "--debug", help="Show tracebacks and library logs."),
         offline: bool = typer.Option(False, "--offline", help="Only the local Hugging Face cache, no network "
                                      "(sets HF_HUB_OFFLINE=1)."),
         version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")):
    STATE["debug"] = debug
    if offline:  # before anything imports huggingface_hub, which reads it once
        os.environ["HF_HUB_OFFLINE"] = "1"
    if ctx.invoked_subcommand is None:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):  # a script, a pipe, CI: no terminal UI
            typer.echo(ctx.get_help(), err=True)
            typer.echo("\nerror: the terminal UI needs a terminal; give a command (see above)", err=True)
            raise typer.Exit(2)
        from edgetune.tui.app import (
            run_app,  # the entry point opens the TUI (the one core -> tui import)
        )
        run_app()


def _columns(text: str) -> dict[str, str]:
    """--columns instruction=question,output=answer as data.columns, checked as a recipe's is."""
    pairs = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise EdgetuneError(f"--columns: {bad[0]!r} is not FIELD=COLUMN (e.g. instruction=question,output=answer)")
    columns = dict(p.split("=", 1) for p in pairs)
    recipe_mod.from_dict({"data": {"columns": columns}}, "--columns")
    return columns


@data_app.command("inspect")
def data_inspect(file: str = typer.Argument(..., help=DATA_HELP),
                 format: str = typer.Option("auto", help="auto, alpaca, chat or text"),
                 columns: str = typer.Option("", help="Your columns, as data.columns maps them: "
                                                       "instruction=question,output=answer"),
                 skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip bad rows and count them."),
                 tokenizer: str = typer.Option("demo", help="Model whose tokenizer counts tokens."),
                 template: str = typer.Option("auto", help="Chat template: auto, model, alpaca, chatml, gemma, "
                                                           "llama3 or a .jinja file."),
                 max_length: int = typer.Option(512, help="Tokens per row; longer rows are cut."),
                 show: int = typer.Option(3, help="Rows to preview.")):
    """Validate a dataset: format, row count, template, a preview, token lengths, cut responses, bad rows."""
    hub.check_ids(models=[tokenizer], datasets=[file])
    _log_libraries(_command_log("data-inspect"), llama=False)
    spec = DataSpec(path=file, format=format, on_bad_row="skip" if skip_bad else "error",
                    max_length=max_length, template=template, columns=_columns(columns))
    prepared = data_mod.inspect(spec, tokenizer, CliRenderer())
    ds, stats = prepared.dataset, prepared.stats
    typer.echo(f"{file}: format {ds.format}, {len(ds.rows)} rows, {len(ds.skipped)} skipped")
    for s in ds.skipped[:10]:
        typer.echo(f"  skipped {s}")
    if prepared.template is not None:
        typer.echo(f"template: {prepared.template.name} ({prepared.template.reason})")
    typer.echo(f"tokens: {stats.summary()}")
    typer.echo(f"suggested max_length: {stats.suggested_max_length()} (p99 {stats.p99}, rounded up)")
    peak = max(c for _, c in stats.histogram) or 1
    for upper, count in stats.histogram:
        typer.echo(f"  <= {upper:6d} {'#' * int(30 * count / peak)} {count}")
    for ex in prepared.examples[:show]:
        typer.echo(f"--- {ex.where}\n{ex.prompt}{ex.completion}")


@app.command()
def train(recipe: Optional[Path] = typer.Option(None, help="Recipe YAML (default: built-in defaults)."),
          name: Optional[str] = typer.Option(None, help=NAME_HELP), base: Optional[str] = typer.Option(None, help=BASE_HELP),
          data: Optional[str] = typer.Option(None, help=DATA_HELP),
          threads: Optional[int] = typer.Option(None, help=THREADS_HELP)):
    """Fine-tune: QLoRA on a CUDA GPU, LoRA on the CPU. Leaves runs/<name>/adapter/."""
    r = _load_recipe(recipe, name, base, data, threads=threads)
    folder = RunFolder.of(r)
    _log_libraries(folder.log, llama=False)
    pipeline.run(r, CliRenderer(), until="train")
    typer.echo(f"adapter: {folder.adapter}")


@app.command()
def run(recipe: Optional[Path] = typer.Option(None, help="Recipe YAML."),
        name: Optional[str] = typer.Option(None, help=NAME_HELP), base: Optional[str] = typer.Option(None, help=BASE_HELP),
        data: Optional[str] = typer.Option(None, help=DATA_HELP),
        until: str = typer.Option("smoke", help="Stop after: train, merge, convert, quantize, smoke."),
        force: bool = typer.Option(False, help="Redo every step."),
        threads: Optional[int] = typer.Option(None, help=THREADS_HELP)):
    """Train, merge, convert, quantize and smoke-test in one go (resumes a stopped run)."""
    _run_pipeline(_load_recipe(recipe, name, base, data, threads=threads), until, force)


def _run_pipeline(r, until: str = "smoke", force: bool = False) -> None:
    folder = RunFolder.of(r)
    _log_libraries(folder.log)
    try:
        pipeline.run(r, CliRenderer(), until=until, force=force)
    finally:  # a failed file verdict still has its report
        if folder.report_md.exists():
            typer.echo(folder.report_md.read_text())
    typer.echo(f"run folder: {folder.dir}")


@app.command()
def demo(headless: bool = typer.Option(False, "--headless", help="No UI even in a terminal."),
         force: bool = typer.Option(False, help="Redo every step.")):
    """The built-in demo end to end: the TUI in a terminal, else headless with its report."""
    r = recipe_mod.demo()
    if not headless and sys.stdin.isatty() and sys.stdout.isatty():
        from edgetune.tui.app import (
            run_app,  # the entry point opens the TUI (the one core -> tui import)
        )
        run_app(recipe=r, autostart=True)
        return
    _run_pipeline(r, force=force)


@app.command()
def merge(base: str = typer.Argument(..., help=BASE_HELP),
          adapter: Path = typer.Argument(..., help="The PEFT adapter folder (adapter_config.json + weights)."),
          out: Path = typer.Argument(..., help="The merged model folder to write.")):
    """Merge a PEFT adapter into the 16/32-bit base (never the 4-bit one), shard by shard."""
    _log_libraries(_command_log("merge"), llama=False)
    merge_mod.merge(resolve_base(base), adapter, out, CliRenderer())


@app.command()
def convert(model_dir: Path = typer.Argument(..., help="A Hugging Face model folder (config.json, safetensors)."),
            out: Path = typer.Argument(..., help="The .gguf file to write."),
            outtype: str = typer.Option("f16", help="f32, f16, bf16 or q8_0")):
    """Convert a Hugging Face model folder to GGUF with edgetune's converter."""
    _log_libraries(_command_log("convert"), hf=False, llama=False)
    convert_hf_to_gguf(model_dir, out, outtype, CliRenderer())


@app.command()
def quantize(src: Path = typer.Argument(..., help="An F16, BF16 or F32 .gguf file."),
             dst: Path = typer.Argument(..., help="The quantized .gguf file to write."),
             type: str = typer.Option("Q4_K_M", "--type", help="Q8_0, Q6_K, Q5_K_M, Q4_K_M, ..."),
             threads: int = typer.Option(0, help=CPU_THREADS_HELP),
             imatrix: Optional[Path] = typer.Option(None, help="An imatrix GGUF (runs/<name>/gguf/<name>.imatrix.gguf); "
                                                               "IQ types need one.")):
    """Quantize an F16/BF16/F32 GGUF with llama.cpp's quantizer."""
    _log_libraries(_command_log("quantize"), hf=False)
    info = quantize_mod.quantize(src, dst, type, threads, CliRenderer(), imatrix=imatrix)
    typer.echo(f"{dst}: {info['bytes'] / 2**20:.1f} MiB, {info['bits_per_weight']:.2f} bits/weight")


@app.command()
def smoke(recipe: Optional[Path] = typer.Option(None, help="Recipe of the run to smoke-test."),
          name: Optional[str] = typer.Option(None, help=NAME_HELP),
          threads: Optional[int] = typer.Option(None, help=THREADS_HELP)):
    """Smoke-test a run's GGUF files with llama.cpp against its merged HF model."""
    r = _load_recipe(recipe, name, None, None, check=False, threads=threads)
    _run_pipeline(r, until="smoke")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run folder (runs/<name>)."),
           open_: bool = typer.Option(False, "--open", help="Open report.html in the browser.")):
    """(Re)build report.md and report.html of a run folder, an old or unfinished one too."""
    folder = RunFolder(run_dir, run_dir.resolve().name)
    md, page = pipeline.write_reports(folder)
    typer.echo(f"{md}\n{page}")
    if open_ and not report_html.open_report(page):
        typer.echo(f"no graphical browser here: open {page.resolve().as_uri()}")


@app.command()
def chat(target: Path = typer.Argument(..., metavar="RUN_DIR|FILE.gguf",
                                       help="A run folder (its recommended file) or a GGUF file."),
         system: str = typer.Option("", help="System prompt."),
         temperature: float = typer.Option(0.7, help="Sampling temperature (0: always the likeliest token)."),
         top_p: float = typer.Option(0.95, help="Nucleus sampling: the smallest set of tokens with this much probability."),
         max_tokens: int = typer.Option(256, help="The longest answer, in tokens."),
         threads: int = typer.Option(0, help=CPU_THREADS_HELP),
         new: bool = typer.Option(False, "--new", help="Start a new conversation instead of the run's last one.")):
    """Chat with a GGUF on the CPU, streamed. A blank line sends (a message may span lines);
    /exit or Ctrl-D quits; /reset forgets the conversation; /system TEXT sets the system prompt;
    /save [FILE] writes it. A run's conversation is kept in its chat.jsonl and reopened."""
    _log_libraries(_command_log("chat"), hf=False)
    gguf, folder = gguf_of(target)
    choice = threads_mod.choose(threads, f"--threads {threads}")
    session = chat_mod.ChatSession(gguf, system=system, threads=choice.threads)
    typer.echo(f"{gguf.name}: template {session.template_name}; {choice.reason}. A blank line sends; /exit or "
               "Ctrl-D quits; /help lists the commands.")
    if folder is not None:
        try:
            if new and folder.chat_log.exists():
                folder.chat_log.unlink()
            if session.open_log(folder.chat_log):
                typer.echo(f"  [{len(session.messages)} earlier messages from {folder.chat_log}; /reset forgets them]")
            if system:
                session.system = system
        except EdgetuneError as e:
            typer.echo(f"  [{e}; this conversation is not kept]")
    read_line = _console_reader()
    while (turn := chat_mod.read_turn(read_line)) is not None:
        if turn.command:
            result = chat_mod.run_command(turn, [session])
            for line in result.lines:
                typer.echo(f"  {chat_mod.shown(line)}")
            if result.exit:
                break
            continue
        for piece in session.send(turn.text, temperature=temperature, top_p=top_p, max_tokens=max_tokens):
            typer.echo(chat_mod.shown(piece), nl=False)
        typer.echo(f"\n  [{session.last_stats}]")
    session.close()


@app.command()
def serve(target: Path = typer.Argument(..., metavar="RUN_DIR|FILE.gguf",
                                        help="A run folder (its recommended file) or a GGUF file."),
          host: str = typer.Option(serve_mod.DEFAULT_HOST, help="Address to listen on (0.0.0.0: every interface)."),
          port: int = typer.Option(serve_mod.DEFAULT_PORT, help="Port to listen on."), api_key: Optional[str] = typer.Option(
              None, "--api-key", help="Every request must carry it (Authorization: Bearer KEY), else 401."),
          threads: int = typer.Option(0, help=CPU_THREADS_HELP),
          ctx: int = typer.Option(serve_mod.DEFAULT_CTX, help="Context length in tokens."),
          name: Optional[str] = typer.Option(None, help="The model name clients use (default: the run's or file's).")):
    """Serve a GGUF behind an OpenAI-compatible API (/v1/chat/completions, /v1/completions,
    /v1/models) until Ctrl-C or SIGTERM. Requests are answered one after another."""
    _log_libraries(_command_log("serve"), hf=False)
    target_ = serve_mod.resolve(target)
    if name:
        target_.model = name

    def ready(lines: list[str]) -> None:
        for line in lines:
            typer.echo(line)
        typer.echo("Ctrl-C stops the server.")
    serve_mod.serve(target_, host, port, api_key, threads, ctx, on_ready=ready)
    typer.echo("server stopped")


@app.command()
def runs(runs_dir: Path = typer.Argument(Path(recipe_mod.Recipe().runs_dir), metavar="[RUNS_DIR]",
                                         help="The folder that holds the runs (default: runs).")):
    """The runs under RUNS_DIR, newest first: state, recommended file and verdicts."""
    rows = list_runs(runs_dir)
    if not rows:
        typer.echo(f"no runs under {runs_dir}/")
        return
    for line in runs_table(rows):
        typer.echo(line)


def runs_table(rows) -> list[str]:
    """The runs list as text columns (`edgetune runs`)."""
    table = [("NAME", "BASE", "DATE", "STATE", "RECOMMENDED", "FILE", "TASK")] + [
        (r.name, r.base or "?", r.date, r.state, r.recommended.name if r.recommended else "—",
         r.file_verdict or "—", r.task_verdict or "—") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    for r, i in zip(rows, range(1, len(lines))):
        if r.detail:
            lines[i] += f"\n    {r.detail}"
    return lines


def _console_reader():
    """input(), with line editing and whole pastes on a terminal: readline's bracketed paste hands
    a multi-line paste over as one string (CPython switches it off by default)."""
    if sys.stdin.isatty():
        try:
            import readline
            readline.parse_and_bind("set enable-bracketed-paste on")
        except ImportError:  # no readline (Windows): a paste arrives line by line, a blank line still sends
            pass
    return input


@app.command()
def batch(adapters: Path = typer.Argument(..., help="A folder of PEFT adapter folders (searched below it)."),
          out: Path = typer.Option(..., "--out", help="Output folder (holds manifest.json)."),
          quant: str = typer.Option("Q4_K_M", "--quant", help="Comma-separated: Q4_K_M,Q8_0,F16,..."),
          mode: str = typer.Option("merged", help="merged (base+adapter per quant), lora (GGUF adapter), both"),
          base: Optional[str] = typer.Option(None, help="Base for every adapter (default: each adapter's own)."),
          jobs: int = typer.Option(1, help="Adapters converted at once."),
          threads: int = typer.Option(0, help=CPU_THREADS_HELP),
          no_smoke: bool = typer.Option(False, "--no-smoke", help="Skip the llama.cpp check of each file.")):
    """Convert every PEFT adapter under a folder to GGUF; one row per adapter, a rerun resumes."""
    render = CliRenderer()
    _log_libraries(out / "edgetune.log")

    def on_event(e: Event) -> None:
        if e.phase == "batch" or e.kind in ("start", "done") and e.phase in ("quantize",):
            render(e)

    rows = run_batch(adapters, out, [q.strip() for q in quant.split(",") if q.strip()], mode, on_event,
                     base=base, jobs=jobs, threads=threads, smoke=not no_smoke)
    typer.echo((out / "batch.md").read_text())
    if any(r["status"] not in ("ok", "skipped") for r in rows):
        raise typer.Exit(1)


def interrupted(e: KeyboardInterrupt) -> None:
    """The line Ctrl-C ends with; the pipeline says where ("interrupted at step 12 of 90")."""
    typer.echo(f"\n{str(e) or 'interrupted'}; run the same command to resume", err=True)
    sys.exit(130)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt as e:
        interrupted(e)


if __name__ == "__main__":  # python -m edgetune.cli, as python -m edgetune
    main()
