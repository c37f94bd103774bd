"""Stand-ins for the slow parts behind the TUI: a pipeline runner, a chat session, a smoke summary."""
from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

from edgetune.events import Cancelled, Event, TrainMetrics
from edgetune.results import RunState, SmokeResult
from edgetune.runs import RunFolder
from edgetune.use.chat import Conversation

# A GGUF header with no metadata and no tensors, padded to the data's alignment: passes the file checks
# edgetune makes before handing a path to a (fake) session or server.
EMPTY_GGUF = b"GGUF" + (3).to_bytes(4, "little") + bytes(24)

FAKE_SUMMARY = SmokeResult.from_dict({
    "prompts": ["p"] * 4, "expected": ["x"] * 4, "base": {"answers": [""] * 4, "accuracy": 0.0},
    "hf": {"answers": ["x"] * 4, "accuracy": 1.0, "perplexity": 1.5},
    "task": {"verdict": "good", "accuracy": [0.0, 1.0], "perplexity": [9.3, 1.5], "eval_loss": 0.4, "reasons": []},
    "files": [{"file": f"my-run-{q}.gguf", "path": f"runs/my-run/gguf/my-run-{q}.gguf", "bytes": int(2**20 * mib),
               "bits_per_weight": bits, "perplexity": ppl, "agreement": agree, "accuracy": acc,
               "gen_tokens_per_s": tps, "passed": passed, "problems": [] if passed else ["answers differ"]}
              for q, mib, bits, ppl, agree, acc, tps, passed in (
                  ("F16", 2.1, 16.0, 1.50, 1.0, 1.0, 900.0, True),
                  ("Q8_0", 1.2, 8.5, 1.51, 1.0, 1.0, 1400.0, True),
                  ("Q4_K_M", 0.8, 5.2, 1.63, 0.75, 0.75, 1800.0, False))],
})


class FakeRunner:
    """Stands in for pipeline.run: records the recipe, emits a run's events, returns a summary.
    wait_for_cancel: after training's progress it waits (up to 10 s) for the token, as training does."""

    def __init__(self, wait_for_cancel: bool = False, steps: int = 30):
        self.recipe = None
        self.cancelled = None  # the run's CancelToken
        self.wait_for_cancel = wait_for_cancel
        self.steps = steps

    def __call__(self, recipe, on_event, cancel):
        self.recipe, self.cancelled = recipe, cancel
        on_event(Event("train", "step_start", "train"))
        on_event(Event("train", "log", "lora on cpu (fp32), 2 examples"))
        for step in range(1, self.steps + 1):
            loss = 3.0 / (1 + step / 4) + 0.05 * (step % 3)
            on_event(TrainMetrics(step=step, total=self.steps, loss=loss, lr=2e-4 * (1 - step / 40),
                                  tokens_per_s=1234.0, eta_s=float(self.steps - step), memory_mb=512.0,
                                  eval_loss=loss + 0.2 if step % 10 == 0 else None))
        if self.wait_for_cancel:
            for _ in range(200):
                if cancel.cancelled:
                    raise Cancelled("training cancelled at step 3; rerun to resume")
                time.sleep(0.05)
        on_event(Event("train", "step_done", "train: 1.0s"))
        on_event(Event("merge", "step_skip", "merge: up to date"))
        for phase in ("convert", "quantize", "smoke"):
            on_event(Event(phase, "step_start", phase))
            on_event(Event(phase, "step_done", f"{phase}: 0.1s"))
        return FAKE_SUMMARY


class FakeChatSession(Conversation):
    """A ChatSession that answers by echoing, piece by piece (one token a piece, `delay` s each)."""

    delay = 0.0

    def __init__(self, path: str, system: str = ""):
        super().__init__(system)
        ticks = itertools.count()
        self.clock = lambda: float(next(ticks))  # a reply takes one "second": its tok/s is its token count
        self.path = Path(path)
        self.template_name = "from the file"
        self.stopped = threading.Event()
        self.sent: list[str] = []  # every message as the screen handed it over

    def _generate(self, history, temperature=0.7, top_p=0.95, max_tokens=256):
        text = history[-1]["content"]
        self.sent.append(text)
        self.stopped.clear()
        words = f"{self.path.stem} says: {text}".split()
        for i, word in enumerate(words[:max_tokens]):
            if self.stopped.is_set():
                break
            time.sleep(self.delay)
            self.tokens += 1
            yield (" " if i else "") + word

    def stop(self):
        super().stop()
        self.stopped.set()

    def close(self):
        pass


def write_fake_adapters(root: Path, names=("alpha", "beta")) -> Path:
    """Folders that look like PEFT adapters to the scan (an adapter_config.json and weights each)."""
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "adapter_config.json").write_text('{"base_model_name_or_path": "demo"}')
        (root / name / "adapter_model.safetensors").write_bytes(b"")
    return root


def make_run(root, name, state="done", smoke=True, recipe=True, gguf=True):
    folder = RunFolder(root / name)
    folder.dir.mkdir(parents=True)
    if recipe:
        folder.recipe_yaml.write_text(f"name: {name}\nbase: demo\ndata:\n  path: demo\nruns_dir: {root}\n")
    steps = {s: {"fingerprint": "x", "seconds": 1.0, "finished": 1.0}
             for s in ("train", "merge", "convert", "quantize", "smoke")}
    RunState.from_dict({"steps": steps, "outcome": state, "error": "boom" if state == "failed" else ""}
                       ).write(folder.state_json)
    if smoke:
        FAKE_SUMMARY.write(folder.smoke_json)
    if gguf:
        folder.gguf_dir.mkdir()
        folder.gguf("Q4_K_M").write_bytes(EMPTY_GGUF)
    return folder


async def wait_until(pilot, condition, seconds=60.0):
    for _ in range(int(seconds / 0.1)):
        if condition():
            return
        await pilot.pause(0.1)
    raise AssertionError("condition not reached in time")


class FakeServers:
    """Stands in for serve.ServerProcess (app.server_process): each server it makes answers once
    `ready_now` is set; setting a server's `returncode` ends it as a crash would."""

    def __init__(self):
        self.made: list = []
        self.ready_now = threading.Event()

    def __call__(self, target, log=None):
        server = FakeServer(target, f"http://127.0.0.1:{8000 + len(self.made)}/v1", self.ready_now)
        self.made.append(server)
        return server


class FakeServer:
    def __init__(self, target, url, ready_now):
        self.target, self.url, self.ready_now = target, url, ready_now
        self.ready = self.stopping = False
        self.returncode = None

    def start(self):
        self.ready_now.wait(10)
        self.ready = True

    def usage(self):
        return [f"OpenAI-compatible API at {self.url} (model \"{self.target.model}\")", f"curl {self.url}/chat/completions"]

    @property
    def died(self):
        return self.returncode is not None and not self.stopping

    def exit_reason(self):
        return f"killed by SIGKILL: {self.target.gguf.name} last line"

    def stop(self):
        self.stopping, self.returncode = True, 0
