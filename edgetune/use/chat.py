"""Chat with a GGUF on the CPU through llama-cpp-python, streaming tokens as they come.

The prompt format comes from the file's own chat template (edgetune writes the template the
model was trained with). A file without one (a base model) is driven as plain text completion.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import edgetune.threads as threads_mod
from edgetune.errors import EdgetuneError
from edgetune.fsutil import write_text
from edgetune.inputs.gguf_io import check_gguf_file

# The chat commands, one table for the console and the TUI: a message whose first line is one of
# them (and nothing more) runs it instead of going to the model.
COMMANDS = {"/reset": "forget the conversation so far",
            "/system": "/system TEXT sets the system prompt from the next turn on; /system alone clears it",
            "/save": "/save [FILE] writes the conversation as JSONL (default: the run's chat log, else ./chat.jsonl)",
            "/help": "this list",
            "/exit": "quit (Ctrl-D quits too)"}
ALIASES = {"/quit": "/exit"}

# Control characters a model may emit (backspace, tab, escape sequences...): shown as escapes, never
# written raw to a terminal, where they would move the cursor, erase text or change colours.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
_NAMED = {"\t": "\\t", "\r": "\\r", "\x1b": "\\e"}


def shown(text: str) -> str:
    """`text` safe for a terminal: newlines kept, every other control character as an escape (\\t, \\x08)."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


@dataclass
class Turn:
    """One thing typed at the console: a message (`command` empty) or a command and its argument."""

    command: str
    text: str


def parse_command(text: str) -> Turn | None:
    """The command `text` holds (`/word arg` on one line), or None when it is a message. An unknown
    `/word` comes back as `/?`; `/usr/bin/x`, which is no command word, is a message."""
    line = text.strip()
    word, _, arg = line.partition(" ")
    if "\n" in line or not re.fullmatch(r"/[a-z]+", word):
        return None
    word = ALIASES.get(word, word)
    return Turn(word, arg.strip()) if word in COMMANDS else Turn("/?", word)


def read_turn(read_line: Callable[[str], str], prompt: str = "> ", more: str = "... ") -> Turn | None:
    """The next turn typed at the console; None at the end of input (Ctrl-D) with nothing typed.

    A message is every line up to a blank one, so a pasted instruction with an input section stays
    one message. A line that already holds newlines (readline hands a bracketed paste over whole)
    is kept whole, blank lines inside it included. A command (see `parse_command`) is a turn of its own."""
    lines: list[str] = []
    while True:
        try:
            line = read_line(more if lines else prompt)
        except EOFError:
            return Turn("", "\n".join(lines).strip("\n")) if lines else None
        if not lines and (command := parse_command(line)) is not None:
            return command
        if not line.strip():
            if lines:
                return Turn("", "\n".join(lines).strip("\n"))
            continue  # Enter on an empty prompt: nothing to send yet
        lines.append(line)


@dataclass
class CommandResult:
    """What a command did, for the console or the TUI to show: lines of text, and whether to quit."""

    lines: list[str]
    exit: bool = False


def run_command(turn: Turn, sessions: list) -> CommandResult:
    """Run a chat command on the sessions of a screen (the console has one). /save writes the first."""
    if turn.command == "/exit":
        return CommandResult([], exit=True)
    if turn.command == "/reset":
        for s in sessions:
            s.clear()
        return CommandResult(["[conversation forgotten]"])
    if turn.command == "/system":
        for s in sessions:
            s.system = turn.text
        return CommandResult([f"[system prompt {'set' if turn.text else 'cleared'}]"])
    if turn.command == "/help":
        return CommandResult([f"{name:8s} {what}" for name, what in COMMANDS.items()])
    if turn.command == "/save":
        if not sessions:
            return CommandResult(["[nothing to save: no model loaded]"])
        path = sessions[0].save(Path(turn.text).expanduser() if turn.text else None)
        return CommandResult([f"[conversation saved to {path}]"])
    return CommandResult([f"[unknown command {turn.text}; /help lists the commands]"])


def read_log(path: Path) -> tuple[str, list[dict]]:
    """A conversation kept as JSONL: a first line {"system": ...}, then one message a line
    ({"role", "content"}, plus "file" and "tokens" for replies). Raises EdgetuneError naming the line."""
    system, messages = "", []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise EdgetuneError(f"{path}: cannot read the chat log ({e})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise EdgetuneError(f"{path}:{n}: not JSON; the chat log is left as it is") from None
        if isinstance(record, dict) and "system" in record and "role" not in record:
            system = str(record["system"])
        elif isinstance(record, dict) and record.get("role") in ("user", "assistant") \
                and isinstance(record.get("content"), str):
            messages.append(record)
        else:
            raise EdgetuneError(f"{path}:{n}: not a chat message (role user/assistant and content)")
    return system, messages


def write_log(path: Path, system: str, messages: list[dict]) -> None:
    lines = [json.dumps({"system": system})] + [json.dumps(m, ensure_ascii=False) for m in messages]
    write_text(path, "\n".join(lines) + "\n")


class Conversation:
    """The history of one chat and what is done to it, apart from the model: send, regenerate, take
    back the last message, keep it in a JSONL log. Subclasses yield a reply's pieces from
    `_generate(history, **params)` and count its tokens in `self.tokens`."""

    path = Path()
    clock = staticmethod(time.perf_counter)  # what a reply's tok/s is timed with

    def __init__(self, system: str = ""):
        self.system = system
        self.messages: list[dict] = []
        self.log: Path | None = None  # where the conversation is kept (a run's chat.jsonl), saved after each reply
        self.last_stats = ""
        self.stop_requested = False
        self.tokens = 0

    def _generate(self, history: list[dict], **params) -> Iterator[str]:
        raise NotImplementedError

    def open_log(self, path: Path) -> int:
        """Keep the conversation in `path` from now on, carrying on the one already there; returns
        how many messages it held. A log that cannot be read raises and is not used (nor overwritten)."""
        if path.is_file():
            self.system, self.messages = read_log(path)
            if self.messages and self.messages[-1]["role"] == "user":  # cut off before its reply
                self.messages.pop()
        self.log = path
        return len(self.messages)

    def save(self, path: Path | None = None) -> Path:
        target = path or self.log or Path("chat.jsonl")
        write_log(target, self.system, self.messages)
        return target

    def _autosave(self) -> None:
        if self.log is not None:
            self.save()

    def clear(self) -> None:
        self.messages = []
        self._autosave()

    def stop(self) -> None:
        self.stop_requested = True

    def send(self, text: str, temperature: float = 0.7, top_p: float = 0.95, max_tokens: int = 256,
             seed: int | None = None) -> Iterator[str]:
        """Yield the reply piece by piece; the finished (or stopped) reply joins the history."""
        self.stop_requested = False
        self.messages.append({"role": "user", "content": text})
        history = ([{"role": "system", "content": self.system}] if self.system else []) + \
            [{"role": m["role"], "content": m["content"]} for m in self.messages]
        params = dict(temperature=temperature, top_p=top_p, max_tokens=max_tokens)
        if seed is not None:
            params["seed"] = seed
        reply, t0 = [], self.clock()
        self.tokens = 0
        for piece in self._generate(history, **params):
            if self.stop_requested:
                break
            reply.append(piece)
            yield piece
        seconds = self.clock() - t0
        self.messages.append({"role": "assistant", "content": "".join(reply), "file": self.path.name,
                              "tokens": self.tokens})
        self.last_stats = (f"{self.tokens} tokens, {self.tokens / seconds if seconds > 0 else 0:.1f} tok/s"
                           + (", stopped" if self.stop_requested else ""))
        self._autosave()

    def take_back(self) -> str | None:
        """Remove the last exchange (the last message and its reply) and return the message, to edit
        and send again; None when nothing was sent yet."""
        if self.messages and self.messages[-1]["role"] == "assistant":
            self.messages.pop()
        if not self.messages or self.messages[-1]["role"] != "user":
            return None
        text = self.messages.pop()["content"]
        self._autosave()
        return text

    def regenerate(self, **params) -> Iterator[str]:
        """Answer the last message again (its old reply is dropped)."""
        text = self.take_back()
        if text is None:
            raise EdgetuneError("nothing to regenerate yet: send a message first")
        yield from self.send(text, **params)


class ChatSession(Conversation):
    def __init__(self, gguf: str | Path, system: str = "", threads: int = 0, n_ctx: int = 2048):
        from llama_cpp import Llama

        super().__init__(system)
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
        self._count_tokens()

    def _count_tokens(self) -> None:
        """Count the tokens a reply really has: llama-cpp-python's stream chunks are not tokens (the
        chat stream opens with a role chunk and ends with an empty one; a multi-byte character comes
        as one chunk of several tokens), so counting chunks said 201 for max_tokens 200. Every token
        sampled that does not end generation is one of the reply's (llama.cpp's own count)."""
        import llama_cpp

        sample, vocab = self.llm.sample, self.llm._model.vocab

        def counting_sample(*args, **kwargs):
            token = sample(*args, **kwargs)
            if not llama_cpp.llama_vocab_is_eog(vocab, token):
                self.tokens += 1
            return token
        self.llm.sample = counting_sample

    def close(self) -> None:
        """Free llama.cpp's model now (its finalizer fails if left to interpreter shutdown)."""
        self.llm.close()

    def _generate(self, history: list[dict], **params) -> Iterator[str]:
        if self.has_template:
            stream = self.llm.create_chat_completion(messages=history, stream=True, **params)
            return (c["choices"][0]["delta"].get("content") or "" for c in stream)
        prompt = "".join(f"{m['content']}\n" for m in history)
        stream = self.llm.create_completion(prompt, stream=True, **params)
        return (c["choices"][0]["text"] for c in stream)
