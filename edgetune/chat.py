"""Chat with a GGUF on the CPU through llama-cpp-python, streaming tokens as they come.

The prompt format comes from the file's own chat template (edgetune writes the template the
model was trained with). A file without one (a base model) is driven as plain text completion.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from edgetune import threads as threads_mod
from edgetune.errors import EdgetuneError
from edgetune.gguf_io import check_gguf_file

# Console chat commands (a line that starts with one of them, typed at the start of a message).
COMMANDS = {"/exit": "quit (Ctrl-D quits too)", "/reset": "forget the conversation so far",
            "/system": "/system TEXT sets the system prompt from the next turn on; /system alone clears it",
            "/help": "this list"}


@dataclass
class Turn:
    """One thing typed at the console: a message (`command` empty) or a command and its argument."""

    command: str
    text: str


def read_turn(read_line: Callable[[str], str], prompt: str = "> ", more: str = "... ") -> Turn | None:
    """The next turn typed at the console; None at the end of input (Ctrl-D) with nothing typed.

    A message is every line up to a blank one, so a pasted instruction with an input section stays
    one message. A line that already holds newlines (readline hands a bracketed paste over whole)
    is kept whole, blank lines inside it included. `/word ...` on the first line is a command;
    `/usr/bin/x`, which is no command word, is text. An unknown command comes back as `/?`."""
    lines: list[str] = []
    while True:
        try:
            line = read_line(more if lines else prompt)
        except EOFError:
            return Turn("", "\n".join(lines).strip("\n")) if lines else None
        if not lines:
            word, _, arg = line.strip().partition(" ")
            if re.fullmatch(r"/[a-z]+", word) and "\n" not in line.strip():
                word = "/exit" if word == "/quit" else word
                return Turn(word, arg.strip()) if word in COMMANDS else Turn("/?", word)
        if not line.strip():
            if lines:
                return Turn("", "\n".join(lines).strip("\n"))
            continue  # Enter on an empty prompt: nothing to send yet
        lines.append(line)


class ChatSession:
    def __init__(self, gguf: str | Path, system: str = "", threads: int = 0, n_ctx: int = 2048):
        from llama_cpp import Llama

        self.path = Path(gguf)
        check_gguf_file(self.path)
        # threads > 0: the caller chose (and said why); 0: chosen here from the CPUs that are free
        self.threads = threads_mod.choose(threads, f"--threads {threads}", busy=0.0 if threads > 0 else None)
        try:
            self.llm = Llama(model_path=str(self.path), n_ctx=n_ctx, verbose=False,
                             n_threads=self.threads.threads, n_threads_batch=self.threads.threads)
        except Exception as e:
            raise EdgetuneError(f"{self.path}: llama.cpp could not load it ({str(e).splitlines()[0]})") from None
        self.has_template = bool(self.llm.metadata.get("tokenizer.chat_template"))
        self.template_name = "from the file" if self.has_template else "none (plain completion)"
        self.system = system
        self.messages: list[dict] = []
        self.last_stats = ""
        self.stop_requested = False

    def close(self) -> None:
        """Free llama.cpp's model now (its finalizer fails if left to interpreter shutdown)."""
        self.llm.close()

    def clear(self) -> None:
        self.messages = []

    def stop(self) -> None:
        self.stop_requested = True

    def send(self, text: str, temperature: float = 0.7, top_p: float = 0.95, max_tokens: int = 256,
             seed: int | None = None) -> Iterator[str]:
        """Yield the reply piece by piece; the finished reply joins the history."""
        self.stop_requested = False
        self.messages.append({"role": "user", "content": text})
        history = ([{"role": "system", "content": self.system}] if self.system else []) + self.messages
        kwargs = dict(temperature=temperature, top_p=top_p, max_tokens=max_tokens, stream=True)
        if seed is not None:
            kwargs["seed"] = seed
        if self.has_template:
            stream = self.llm.create_chat_completion(messages=history, **kwargs)
            pieces = (c["choices"][0]["delta"].get("content") or "" for c in stream)
        else:
            prompt = "".join(f"{m['content']}\n" for m in history)
            stream = self.llm.create_completion(prompt, **kwargs)
            pieces = (c["choices"][0]["text"] for c in stream)
        reply, n, t0 = [], 0, time.perf_counter()
        for piece in pieces:
            if self.stop_requested:
                break
            n += 1
            reply.append(piece)
            yield piece
        seconds = time.perf_counter() - t0
        self.messages.append({"role": "assistant", "content": "".join(reply)})
        self.last_stats = f"{n} tokens, {n / seconds if seconds > 0 else 0:.1f} tok/s"
