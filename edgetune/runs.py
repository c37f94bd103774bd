"""A run is an object: one RunFolder owns every path in runs/<name>/, and reads its typed results.

runs/<name>/
  recipe.yaml  state.json  edgetune.log  train_log.jsonl  train.json  adapter/  checkpoints/  merged/
  gguf/<name>-F16.gguf  gguf/<name>-Q4_K_M.gguf ...  gguf/<name>.imatrix.gguf  gguf/Modelfile  gguf/README.md
  quant.json  smoke.json  report.md  report.html  chat.jsonl  tensorboard/  wandb/

Steps write through it, and everything after the pipeline (the CLI, the TUI's Runs and Results
screens, chat, serve, the report) reads a finished run through it: no file name is spelled twice.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from edgetune import __version__
from edgetune.errors import EdgetuneError
from edgetune.fsutil import is_main_process
from edgetune.results import (
    QuantResult,
    Record,
    RunState,
    SmokeResult,
    StepRecord,
    TrainLogEntry,
    TrainResult,
    train_history,
)

OUTCOMES = ("running", "done", "failed", "interrupted")


class RunFolder:
    """The paths of one run folder and the records in it."""

    def __init__(self, path: str | Path, name: str | None = None):
        self.dir = Path(path)
        self.name = name or self.dir.name

    @classmethod
    def of(cls, recipe) -> RunFolder:
        """The folder a recipe's run lives in: <runs_dir>/<name>."""
        return cls(Path(recipe.runs_dir) / recipe.name, recipe.name)

    @classmethod
    def containing(cls, path: str | Path) -> RunFolder | None:
        """The run a path belongs to: a run folder itself, or a file in its gguf/ folder; else None."""
        p = Path(path).expanduser()
        for candidate in (p, p.parent.parent if p.parent.name == "gguf" else None):
            if candidate is not None and candidate.is_dir() and cls(candidate).is_run():
                return cls(candidate)
        return None

    def delete(self) -> None:
        """Remove the run folder and everything in it (only a folder that is a run)."""
        if not self.is_run():
            raise EdgetuneError(f"{self.dir}: not a run folder (no {self.recipe_yaml.name} or "
                                f"{self.state_json.name}); not deleted")
        shutil.rmtree(self.dir)

    # ------------------------------------------------------------ paths
    recipe_yaml = property(lambda self: self.dir / "recipe.yaml")
    state_json = property(lambda self: self.dir / "state.json")
    log = property(lambda self: self.dir / "edgetune.log")
    train_log = property(lambda self: self.dir / "train_log.jsonl")
    train_json = property(lambda self: self.dir / "train.json")
    adapter = property(lambda self: self.dir / "adapter")
    checkpoints = property(lambda self: self.dir / "checkpoints")
    # each run of the train step that the checkpoints continue: its seconds and last step
    train_parts = property(lambda self: self.checkpoints / "edgetune-parts.json")
    merged = property(lambda self: self.dir / "merged")
    gguf_dir = property(lambda self: self.dir / "gguf")
    quant_json = property(lambda self: self.dir / "quant.json")
    smoke_json = property(lambda self: self.dir / "smoke.json")
    report_md = property(lambda self: self.dir / "report.md")
    report_html = property(lambda self: self.dir / "report.html")
    tensorboard = property(lambda self: self.dir / "tensorboard")  # train.report_to: tensorboard event files
    wandb = property(lambda self: self.dir / "wandb")  # train.report_to: wandb (offline runs stay here)
    chat_log = property(lambda self: self.dir / "chat.jsonl")
    modelfile = property(lambda self: self.gguf_dir / "Modelfile")
    model_card = property(lambda self: self.gguf_dir / "README.md")
    imatrix = property(lambda self: self.gguf_dir / f"{self.name}.imatrix.gguf")

    def gguf(self, label: str) -> Path:
        """The GGUF file of a type or sweep label: gguf/<name>-<LABEL>.gguf."""
        return self.gguf_dir / f"{self.name}-{label.upper()}.gguf"

    def ggufs(self) -> list[Path]:
        """Every model GGUF in the folder (the importance matrix is not a model)."""
        return sorted(p for p in self.gguf_dir.glob("*.gguf") if p != self.imatrix) if self.gguf_dir.is_dir() else []

    # ------------------------------------------------------------ records
    def train_result(self) -> TrainResult:
        return TrainResult.read(self.train_json)

    def quant_result(self) -> QuantResult:
        return QuantResult.read(self.quant_json)

    def smoke_result(self) -> SmokeResult:
        return SmokeResult.read(self.smoke_json)

    def train_history(self) -> list[TrainLogEntry]:
        """train_log.jsonl as typed entries, in step order; [] when there is none."""
        try:
            return train_history(self.train_log.read_text(encoding="utf-8").splitlines())
        except (FileNotFoundError, UnicodeDecodeError):
            return []

    def recipe(self):
        from edgetune.inputs import recipe as recipe_mod
        return recipe_mod.load(self.recipe_yaml)

    def is_run(self) -> bool:
        """Whether the folder holds a run (a recipe.yaml or a state.json), finished or not."""
        return self.recipe_yaml.is_file() or self.state_json.is_file()

    def optional(self, read):
        """`read()` (one of the readers above), or None when its file is missing or unreadable."""
        try:
            return read()
        except EdgetuneError:
            return None

    def state(self) -> RunState:
        """state.json; an empty state when there is none. A state.json of edgetune 0.1 (steps at the
        top level, no outcome) is read as such."""
        try:
            data = json.loads(self.state_json.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return RunState()
        if isinstance(data, dict) and "steps" not in data:
            data = {"steps": {k: v for k, v in data.items() if isinstance(v, dict) and "fingerprint" in v}}
        try:
            return RunState.from_dict(data)
        except (TypeError, KeyError, ValueError):
            return RunState()

    def _write_state(self, state: RunState) -> None:
        if not is_main_process():
            return
        state.updated, state.version = time.time(), __version__
        state.write(self.state_json)

    def mark_step(self, step: str, fingerprint: str, seconds: float) -> None:
        state = self.state()
        state.steps[step] = StepRecord(fingerprint, round(seconds, 1), time.time())
        self._write_state(state)

    def forget_steps(self) -> None:
        state = self.state()
        state.steps = {}
        self._write_state(state)

    def mark_outcome(self, outcome: str, step: str = "", error: str = "") -> None:
        assert outcome in OUTCOMES, outcome
        state = self.state()
        state.outcome, state.step, state.error = outcome, step, error
        self._write_state(state)

    def recommended_gguf(self) -> Path | None:
        """The file to chat with or serve: the auto sweep's recommendation, else the smallest kept
        quantized file, else the unquantized one; None before any GGUF exists. Once the smoke step has
        run, the first of those that passed it and kept the fine-tune: a file that fails the check, or
        gave back what training taught, is never the one offered."""
        def size(path: Path) -> int:
            return path.stat().st_size

        order = sorted(self.ggufs(), key=size)  # smallest first: the unquantized file comes last
        quant = self.optional(self.quant_result)
        if quant is not None:
            recommended = quant.recommended()
            picked = [self.gguf(recommended.label)] if recommended else []
            kept = sorted((self.gguf(label) for label in quant.kept_labels()), key=lambda p: size(p) if p.is_file() else 0)
            order = list(dict.fromkeys([p for p in picked + kept if p.is_file()] + order))
        smoke = self.optional(self.smoke_result)
        if smoke is not None and order:
            passed = {Path(f.file).name for f in smoke.files if f.passed}
            gave_back = {self.gguf(f.label).name for f in (quant.files if quant else []) if f.gave_back}
            order = ([p for p in order if p.name in passed and p.name not in gave_back]
                     + [p for p in order if p.name in passed] + order)
        return order[0] if order else None


@dataclass
class RunSummary:
    """One row of the runs list: what a person needs to pick a run."""

    folder: RunFolder
    name: str
    base: str
    data: str
    updated: float  # unix time of the last change
    state: str  # done, failed, interrupted, running, incomplete, unreadable
    detail: str  # the error, the step it stopped in, or what is missing
    recommended: Path | None
    file_verdict: str  # PASS / FAIL / ""
    task_verdict: str  # good / poor / ... / ""
    version: str = ""  # the edgetune that last wrote its state ("" when unknown)

    @property
    def date(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.updated)) if self.updated else "—"

    @property
    def can_chat(self) -> bool:
        return self.recommended is not None


def summarize(folder: RunFolder) -> RunSummary:
    """A run folder as the runs list shows it; a half-written folder or one from another version
    says so in `state`/`detail`, never raises."""
    base = data = ""
    state, detail = "incomplete", ""
    if not folder.recipe_yaml.is_file():
        detail = f"no {folder.recipe_yaml.name}"
    else:
        try:
            recipe = folder.recipe()
            base, data = recipe.base, recipe.data.path
        except EdgetuneError as e:
            state, detail = "unreadable", str(e)
    run_state = folder.state()
    smoke = folder.optional(folder.smoke_result)
    if state != "unreadable":
        if run_state.outcome in ("failed", "interrupted", "running"):
            state, detail = run_state.outcome, run_state.error or run_state.step
        elif smoke is not None and "smoke" in run_state.steps:
            state = "done"
        elif run_state.steps:
            state, detail = "incomplete", f"finished: {', '.join(run_state.steps)}"
        elif not detail:
            detail = "no step finished"
    if smoke is None and folder.smoke_json.exists():
        detail = detail or f"{folder.smoke_json.name} from another version"
    if run_state.version and run_state.version != __version__:
        detail = "; ".join(d for d in (detail, f"made by edgetune {run_state.version}") if d)
    files = [p for p in (folder.dir / n for n in ("state.json", "recipe.yaml")) if p.exists()]
    updated = max((p.stat().st_mtime for p in files), default=folder.dir.stat().st_mtime if folder.dir.exists() else 0)
    return RunSummary(folder, folder.name, base, data, updated, state, detail, folder.recommended_gguf(),
                      ("PASS" if smoke.passed else "FAIL") if smoke else "",
                      smoke.task.verdict if smoke and smoke.task else "", run_state.version)


def gguf_of(target: str | Path) -> tuple[Path, RunFolder | None]:
    """What `edgetune chat` and `serve` open: a run folder's recommended file or a .gguf file, and the run
    it belongs to (None for a file outside any run)."""
    p = Path(target).expanduser()
    folder = RunFolder.containing(p)
    if p.is_dir():
        if folder is None:
            raise EdgetuneError(f"{p}: neither a .gguf file nor a run folder (no recipe.yaml or state.json)")
        gguf = folder.recommended_gguf()
        if gguf is None:
            raise EdgetuneError(f"{p}: the run has no GGUF file yet (run it through the convert step)")
        return gguf, folder
    if not p.is_file():
        raise EdgetuneError(f"{p}: no such file or run folder")
    return p, folder


def list_runs(runs_dir: str | Path) -> list[RunSummary]:
    """Every run folder under `runs_dir` (a folder with a recipe.yaml or state.json), newest first."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    folders = [RunFolder(p) for p in root.iterdir() if p.is_dir() and RunFolder(p).is_run()]
    return sorted((_summary_or_unreadable(f) for f in folders), key=lambda s: s.updated, reverse=True)


def _summary_or_unreadable(folder: RunFolder) -> RunSummary:
    """One bad folder (a permission, a file cut mid-write) is a row that says so, not a crashed list."""
    try:
        return summarize(folder)
    except Exception as e:
        first = (str(e).splitlines() or [""])[0][:200]
        return RunSummary(folder, folder.name, "", "", 0.0, "unreadable", f"{type(e).__name__}: {first}", None, "", "")


__all__ = ["OUTCOMES", "Record", "RunFolder", "RunSummary", "gguf_of", "list_runs", "summarize"]
