"""Chat speed, TUI against CLI: the same GGUF, prompts, thread count and sampling (temperature 0, so
both generate the same tokens), each path in a fresh process, alternating. The CLI path is
`edgetune chat` on a pipe; the TUI path is the real App (EdgetuneApp, ChatScreen) run headless with
run_test, messages typed into its box. Tokens/s is edgetune's own count per reply, token-weighted.

    .venv/bin/python -m scripts.bench.chat                   # Gemma 3 270M Q4_K_M (PyPI package)
    .venv/bin/python -m scripts.bench.chat --model demo      # the demo base, quantized to Q4_K_M
    .venv/bin/python -m scripts.bench.chat --gguf FILE.gguf

Run it on a quiet machine (flock -x /work/wt/cpu.lock ...). The last line reads `ratio TUI/CLI: 0.97x`.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts.bench.harness import ratio_line

PROMPTS = ["Once upon a time in a small village,", "The three most useful things to pack for a long hike are",
           "Water boils at a lower temperature on a mountain because"]
STATS = re.compile(r"\[(\d+) tokens, ([\d.]+) tok/s")

TUI_CHILD = r"""
import asyncio, json, sys
from edgetune.chat import ChatSession
from edgetune.tui.app import EdgetuneApp
gguf, threads, max_tokens, prompts = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])

async def go():
    app = EdgetuneApp(chat_session=lambda p, s: ChatSession(p, system=s, threads=threads))
    async with app.run_test(size=(100, 32)) as pilot:
        app.action_chat(gguf)
        await pilot.pause()
        chat = app.screen
        while not chat.sessions:
            await pilot.pause(0.1)
        chat.query_one("#temperature").value = "0"
        chat.query_one("#max_tokens").value = max_tokens
        for p in prompts:
            n = len(chat.sessions[0].messages)
            chat.query_one("#message").text = p
            chat.query_one("#message").focus()
            await pilot.press("enter")
            while len(chat.sessions[0].messages) < n + 2 or chat.streaming:
                await pilot.pause(0.05)
            print(f"[{chat.sessions[0].last_stats}]", flush=True)
        chat.sessions[0].close()
        chat.sessions = []
asyncio.run(go())
"""


def parse(out: str) -> tuple[int, float]:
    """Total tokens and token-weighted tokens/s of the replies a run printed."""
    pairs = [(int(n), float(tps)) for n, tps in STATS.findall(out)]
    if len(pairs) != len(PROMPTS):
        raise SystemExit(f"expected {len(PROMPTS)} replies, got {len(pairs)}:\n{out[-2000:]}")
    tokens = sum(n for n, _ in pairs)
    return tokens, tokens / sum(n / tps for n, tps in pairs)


def run_cli(gguf: Path, threads: int, max_tokens: int, env: dict) -> tuple[int, float]:
    typed = "".join(f"{p}\n\n" for p in PROMPTS)
    out = subprocess.run([sys.executable, "-m", "edgetune", "chat", str(gguf), "--temperature", "0", "--max-tokens",
                          str(max_tokens), "--threads", str(threads)], input=typed, capture_output=True, text=True,
                         env=env, check=True).stdout
    return parse(out)


def run_tui(gguf: Path, threads: int, max_tokens: int, env: dict) -> tuple[int, float]:
    import json
    out = subprocess.run([sys.executable, "-c", TUI_CHILD, str(gguf), str(threads), str(max_tokens),
                          json.dumps(PROMPTS)], capture_output=True, text=True, env=env, check=True).stdout
    return parse(out)


def demo_q4(work: Path) -> Path:
    from edgetune import quantize, resolve_base
    from edgetune.convert import convert_hf_to_gguf
    f16 = convert_hf_to_gguf(resolve_base("demo"), work / "demo-F16.gguf", "f16")
    quantize.quantize(f16, work / "demo-Q4_K_M.gguf", "Q4_K_M")
    return work / "demo-Q4_K_M.gguf"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("gemma3-270m", "demo"), default="gemma3-270m")
    ap.add_argument("--gguf", type=Path, help="any GGUF instead of --model")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
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
              f"{len(PROMPTS)} prompts, {args.rounds} rounds", flush=True)
        speeds: dict[str, list[float]] = {"CLI": [], "TUI": []}
        for r in range(args.rounds):
            for name, fn in (("CLI", run_cli), ("TUI", run_tui)):
                tokens, tps = fn(plain, args.threads, args.max_tokens, env)
                speeds[name].append(tps)
                print(f"round {r + 1} {name}: {tokens} tokens, {tps:.1f} tok/s", flush=True)
        cli, tui = statistics.median(speeds["CLI"]), statistics.median(speeds["TUI"])
        print(f"median tok/s: CLI {cli:.1f}, TUI {tui:.1f}")
        print(ratio_line("TUI/CLI", tui, cli))


if __name__ == "__main__":
    main()
