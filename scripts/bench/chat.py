"""Chat speed, TUI against CLI: the same GGUF, prompts, thread count and sampling (temperature 0, so
both generate the same tokens), each path in a fresh process on a terminal of its own, alternating.

Both paths run as a user runs them, on a pseudo-terminal (100x32) that this script reads as fast as
a terminal would: the CLI is `edgetune chat` with the prompts typed at its prompt; the TUI is the
real app (EdgetuneApp with its own chat-session factory, ChatScreen, Textual's Linux driver writing
every frame to the terminal), the messages typed into its box and Enter pressed by an autopilot.
Tokens/s is edgetune's own count per reply, token-weighted. The TUI run then measures how long a
streaming reply takes to stop after Ctrl+S and after Escape (key press to the reply shown stopped).

    .venv/bin/python -m scripts.bench.chat                   # Gemma 3 270M Q4_K_M (PyPI package)
    .venv/bin/python -m scripts.bench.chat --model demo      # the demo base, quantized to Q4_K_M
    .venv/bin/python -m scripts.bench.chat --gguf FILE.gguf
    .venv/bin/python -m scripts.bench.chat --threads 0 --busy # edgetune's thread choice, a busy loop beside

Run it on a quiet machine (flock -x /work/wt/cpu.lock ...). The last line reads `ratio TUI/CLI: 0.97x`.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
from pathlib import Path

from scripts.bench.harness import ratio_line

PROMPTS = ["Once upon a time in a small village,", "The three most useful things to pack for a long hike are",
           "Water boils at a lower temperature on a mountain because"]
STOP_PROMPT = "Write a long story about a lighthouse keeper and the sea."
STATS = re.compile(r"\[(\d+) tokens, ([\d.]+) tok/s")
SIZE = (100, 32)  # columns, rows of the terminal both paths write to

TUI_CHILD = r"""
import asyncio, json, sys, time
from functools import partial
from edgetune.tui.app import EdgetuneApp, default_chat_session
gguf, threads, max_tokens, prompts, stop_prompt, out = sys.argv[1:7]
threads, prompts, stats, stops = int(threads), json.loads(prompts), [], {}

async def drive(pilot):
    app = pilot.app
    app.action_chat(gguf)
    await pilot.pause()
    chat = app.screen
    while not chat.sessions:
        await pilot.pause(0.1)
    chat.query_one("#temperature").value = "0"

    async def send(text):
        n = len(chat.sessions[0].messages)
        chat.query_one("#message").text = text
        chat.query_one("#message").focus()
        await pilot.press("enter")
        return n

    chat.query_one("#max_tokens").value = max_tokens
    for p in prompts:
        n = await send(p)
        while len(chat.sessions[0].messages) < n + 2 or chat.streaming:
            await pilot.pause(0.05)
        stats.append(chat.sessions[0].last_stats)
    chat.query_one("#max_tokens").value = "2000"
    for key in ("ctrl+s", "escape"):  # a long reply, stopped once it streams
        n = await send(stop_prompt)
        while not (chat.streaming and len(chat.replies[0]) > 40):
            if len(chat.sessions[0].messages) == n + 2 and not chat.streaming:
                break  # it ended on its own before it could be stopped
            await asyncio.sleep(0.005)
        if not chat.streaming:
            continue
        t0 = time.perf_counter()
        await pilot.press(key)
        while chat.streaming:
            await asyncio.sleep(0.002)
        stops[key] = time.perf_counter() - t0
    chat.sessions[0].close()
    chat.sessions = []
    app.exit()

app = EdgetuneApp(chat_session=partial(default_chat_session, thread_count=threads))
app.run(auto_pilot=drive)
with open(out, "w") as f:
    json.dump({"stats": stats, "stops": stops}, f)
"""


def on_terminal(args: list[str], env: dict, typed: str = "") -> str:
    """Run `args` on a fresh pseudo-terminal of SIZE, typing `typed` at it; everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env={**env, "TERM": "xterm-256color"},
                            start_new_session=True)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:  # a terminal that keeps up: read whatever comes, at once
        while True:
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    if typed:
        os.write(master, typed.encode())
    proc.wait()
    reader.join(5)
    os.close(master)
    out = b"".join(chunks).decode("utf-8", "replace")
    if proc.returncode != 0:
        raise SystemExit(f"{args[:4]} failed (rc {proc.returncode}):\n{out[-3000:]}")
    return out


def weighted(stats: list[str]) -> tuple[int, float]:
    """Total tokens and token-weighted tokens/s of the replies' stats lines."""
    pairs = [(int(n), float(tps)) for n, tps in STATS.findall("\n".join(f"[{s}" for s in stats))]
    if len(pairs) != len(PROMPTS):
        raise SystemExit(f"expected {len(PROMPTS)} replies, got {len(pairs)}: {stats}")
    tokens = sum(n for n, _ in pairs)
    return tokens, tokens / sum(n / tps for n, tps in pairs)


def run_cli(gguf: Path, threads: int, max_tokens: int, env: dict) -> tuple[tuple[int, float], dict]:
    typed = "".join(f"{p}\n\n" for p in PROMPTS) + "/exit\n"
    out = on_terminal([sys.executable, "-m", "edgetune", "chat", str(gguf), "--temperature", "0", "--max-tokens",
                       str(max_tokens), "--threads", str(threads)], env, typed)
    return weighted([m.group(0)[1:] for m in STATS.finditer(out)]), {}


def run_tui(gguf: Path, threads: int, max_tokens: int, env: dict) -> tuple[tuple[int, float], dict]:
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        on_terminal([sys.executable, "-c", TUI_CHILD, str(gguf), str(threads), str(max_tokens), json.dumps(PROMPTS),
                     STOP_PROMPT, result.name], env)
        measured = json.loads(Path(result.name).read_text())
    return weighted(measured["stats"]), measured["stops"]


def demo_q4(work: Path) -> Path:
    """The demo base at Q4_K_M. It was trained on short statements that each end on EOS: its replies
    are a word or two (as plain completion too), so on it the bench times whole replies, not streaming."""
    from edgetune import quantize, resolve_base
    from edgetune.convert import convert_hf_to_gguf
    f16 = convert_hf_to_gguf(resolve_base("demo"), work / "demo-F16.gguf", "f16")
    quantize.quantize(f16, work / "demo-Q4_K_M.gguf", "Q4_K_M")
    return work / "demo-Q4_K_M.gguf"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("gemma3-270m", "demo"), default="gemma3-270m")
    ap.add_argument("--gguf", type=Path, help="any GGUF instead of --model")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="0: edgetune chooses (threads.choose)")
    ap.add_argument("--busy", action="store_true", help="one CPU-bound process runs beside both paths")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=2, help="CLI then TUI, this many times")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.gguf:
            gguf = args.gguf
        elif args.model == "demo":
            gguf = demo_q4(work)
        else:
            from edgetune import gemma3_270m_gguf
            gguf = gemma3_270m_gguf()
        # a copy outside any run folder: no run's chat.jsonl is reopened or written
        plain = work / gguf.name
        if not plain.exists():
            plain.symlink_to(gguf.resolve())
        env = {**os.environ, "EDGETUNE_CACHE": os.environ.get("EDGETUNE_CACHE", str(work / "cache"))}
        print(f"{gguf.name}: {args.threads} threads, temperature 0, max {args.max_tokens} tokens, "
              f"{len(PROMPTS)} prompts, {args.rounds} rounds, terminal {SIZE[0]}x{SIZE[1]}; "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
        if busy is not None:
            print(f"a busy loop (pid {busy.pid}) runs beside both paths", flush=True)
        speeds: dict[str, list[float]] = {"CLI": [], "TUI": []}
        stops: dict[str, list[float]] = {}
        try:
            for r in range(args.rounds):
                for name, fn in (("CLI", run_cli), ("TUI", run_tui)):
                    (tokens, tps), stopped = fn(plain, args.threads, args.max_tokens, env)
                    speeds[name].append(tps)
                    for key, seconds in stopped.items():
                        stops.setdefault(key, []).append(seconds)
                    print(f"round {r + 1} {name}: {tokens} tokens, {tps:.1f} tok/s"
                          + "".join(f", stop after {k} {s * 1000:.0f} ms" for k, s in stopped.items()), flush=True)
        finally:  # the busy loop never outlives the bench
            if busy is not None:
                busy.kill()
        cli, tui = statistics.median(speeds["CLI"]), statistics.median(speeds["TUI"])
        print("TUI stop latency (worst): " + ", ".join(f"{k} {max(v) * 1000:.0f} ms" for k, v in stops.items()))
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print(f"median tok/s: CLI {cli:.1f}, TUI {tui:.1f}")
        print(ratio_line("TUI/CLI", tui, cli))


if __name__ == "__main__":
    main()
