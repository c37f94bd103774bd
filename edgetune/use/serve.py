"""Serve a GGUF behind an OpenAI-compatible HTTP API, on llama-cpp-python's server (FastAPI,
uvicorn, sse-starlette): /v1/models, /v1/chat/completions (streamed or not), /v1/completions.

The file's own chat template and stop tokens drive the chat endpoint (llama-cpp-python reads
them from the GGUF); a run folder serves its recommended file. Requests are answered one after
another: a new request waits for the one streaming (never interrupts it). Ctrl-C or SIGTERM
stops the server after the requests in flight and frees the port.
"""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import edgetune.threads as threads_mod
from edgetune.errors import EdgetuneError
from edgetune.inputs.gguf_io import check_gguf_file
from edgetune.runs import gguf_of

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_CTX = 2048


@dataclass
class Target:
    """What `edgetune serve` serves: a GGUF file and the model name clients ask for."""

    gguf: Path
    model: str


def resolve(target: str | Path) -> Target:
    """A run folder (its recommended file, named after the run) or a .gguf file (named by its stem)."""
    gguf, folder = gguf_of(target)
    check_gguf_file(gguf)
    return Target(gguf, folder.name if Path(target).expanduser().is_dir() else gguf.stem)


def base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else shown}:{port}/v1"


def curl_line(host: str, port: int, model: str, api_key: str | None = None) -> str:
    """A curl command that asks the server one chat question."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}]})
    auth = f" -H 'Authorization: Bearer {api_key}'" if api_key else ""
    return (f"curl {base_url(host, port)}/chat/completions -H 'Content-Type: application/json'{auth} "
            f"-d '{body}'")


def usage_lines(target: Target, host: str, port: int, api_key: str | None = None) -> list[str]:
    """What a person needs to use a running server: its URL, the model name and a curl line."""
    return [f"OpenAI-compatible API at {base_url(host, port)} (model \"{target.model}\": {target.gguf.name})",
            curl_line(host, port, target.model, api_key)]


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str, start: int = DEFAULT_PORT, tries: int = 50) -> int:
    """The first free port from `start` on (the TUI serves a second run beside the first)."""
    for port in range(start, start + tries):
        if port_free(host, port):
            return port
    raise EdgetuneError(f"no free port on {host} between {start} and {start + tries - 1}")


class _Stop(Exception):
    """SIGTERM, raised in the main thread once uvicorn has shut down."""


def serve(target: Target, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, api_key: str | None = None,
          threads: int = 0, n_ctx: int = DEFAULT_CTX, on_ready: Callable[[list[str]], None] | None = None) -> None:
    """Run the server until Ctrl-C or SIGTERM (blocking); the model is freed before it returns."""
    import uvicorn
    from llama_cpp.server import app as server_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    if not port_free(host, port):
        raise EdgetuneError(f"{host}:{port} is in use (another server?); choose another with --port")
    choice = threads_mod.choose(threads, "--threads")  # once, at start: the server keeps its threads
    threads = choice.threads
    try:
        app = server_app.create_app(
            server_settings=ServerSettings(host=host, port=port, api_key=api_key or None, interrupt_requests=False),
            model_settings=[ModelSettings(model=str(target.gguf), model_alias=target.model, n_ctx=n_ctx,
                                          n_threads=threads, n_threads_batch=threads, verbose=False)])
    except Exception as e:
        raise EdgetuneError(f"{target.gguf}: llama.cpp could not load it ({(str(e).splitlines() or [''])[0]})") from None
    llm = server_app._llama_proxy()  # the one model, loaded by create_app

    def tokens(text: str) -> int:
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
    server = uvicorn.Server(uvicorn.Config(ChatDefaults(app, llm.n_ctx(), tokens), host=host, port=port,
                                           log_level="warning", access_log=False))
    if on_ready:
        on_ready(usage_lines(target, host, port, api_key) + [f"threads: {choice.reason}"])

    def stop(signum, frame):
        raise _Stop()
    # uvicorn catches SIGINT/SIGTERM while it runs, shuts down, then raises the signal again under
    # the handler that was there before: ours, so the process ends here with exit 0, not killed.
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.run()
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server_app._llama_proxy is not None:
            server_app._llama_proxy.free()


class ChatDefaults:
    """ASGI wrapper over llama-cpp-python's app, for completion requests:
    - one that names no repeat_penalty gets 1.0, as `edgetune chat` and the OpenAI API have it
      (llama-cpp-python's server adds 1.1, so the same question at temperature 0 got another answer);
    - a streamed one whose text alone fills the context is a 400 naming the limit, as it is unstreamed
      (llama-cpp-python finds out only once the event stream has begun, and cuts it)."""

    def __init__(self, app, n_ctx: int, tokenize: Callable[[str], int]):
        self.app, self.n_ctx, self.tokenize = app, n_ctx, tokenize

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("completions"):
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict):
            if data.get("stream") and (too_long := self._too_long(data)):
                await _send_json(send, 400, {"error": {"message": too_long, "type": "invalid_request_error",
                                                       "param": "messages", "code": "context_length_exceeded"}})
                return
            if "repeat_penalty" not in data:
                data["repeat_penalty"] = 1.0
                body = json.dumps(data).encode()
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        scope = dict(scope, headers=headers + [(b"content-length", str(len(body)).encode())])
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()
        await self.app(scope, replay, send)

    def _too_long(self, data: dict) -> str:
        messages = data.get("messages")
        if isinstance(messages, list):
            text = "\n".join(m.get("content") or "" for m in messages if isinstance(m, dict)
                             and isinstance(m.get("content"), str))
        else:
            text = data.get("prompt") if isinstance(data.get("prompt"), str) else ""
        if not text:
            return ""
        n = self.tokenize(text)
        if n < self.n_ctx:
            return ""
        return (f"This model's maximum context length is {self.n_ctx} tokens. However, you requested at least {n} "
                "tokens in the messages. Please reduce the length of the messages.")


async def _send_json(send, status: int, obj: dict) -> None:
    body = json.dumps(obj).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class ServerProcess:
    """`edgetune serve` in a child process (the TUI's Serve button): started, waited for, watched, stopped."""

    def __init__(self, target: Target, host: str = DEFAULT_HOST, port: int | None = None,
                 api_key: str | None = None, threads: int = 0, log: Path | None = None):
        self.target, self.host, self.api_key = target, host, api_key
        self.port = port or free_port(host)
        self.threads = threads
        self.log = log  # this server's output, written afresh at each start (its last line says why it ended)
        self.proc: subprocess.Popen | None = None
        self.ready = False  # it answered: start() returned
        self.stopping = False  # stop() was asked: its end is no news

    @property
    def url(self) -> str:
        return base_url(self.host, self.port)

    def usage(self) -> list[str]:
        return usage_lines(self.target, self.host, self.port, self.api_key)

    def start(self, timeout: float = 120.0) -> None:
        """Start it and wait until it answers /v1/models; EdgetuneError with its last line if it ends."""
        cmd = [sys.executable, "-m", "edgetune", "serve", str(self.target.gguf), "--host", self.host,
               "--port", str(self.port), "--name", self.target.model, "--threads", str(self.threads)]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        finally:
            if self.log:
                out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping:  # stop() while starting (the app quit)
            if self.proc.poll() is not None:
                raise EdgetuneError(f"the server ended ({self.exit_reason()})")
            if answers(self.url):
                self.ready = True
                return
            time.sleep(0.2)
        self.stop()
        raise EdgetuneError("the server was stopped while it started" if self.stopping else
                            f"the server did not answer within {timeout:.0f} s: {self.last_line()}")

    def last_line(self) -> str:
        if self.log and self.log.is_file():
            lines = [s for s in self.log.read_text(errors="replace").splitlines() if s.strip()]
            if lines:
                return lines[-1][:200]
        return "no output"

    def exit_reason(self) -> str:
        """How the process ended and its last line of output: 'exit 1: OSError: ...', 'killed by SIGKILL: ...'."""
        rc = self.proc.poll() if self.proc else None
        if rc is None:
            return "still running"
        how = f"exit {rc}" if rc >= 0 else f"killed by {_signal_name(-rc)}"
        return f"{how}: {self.last_line()}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def died(self) -> bool:
        """It ended without being asked to (a crash, a kill, the port taken)."""
        return self.proc is not None and self.proc.poll() is not None and not self.stopping

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the server finishes and frees the port), SIGKILL if it does not end in time."""
        self.stopping = True
        if not self.running:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def answers(url: str) -> bool:
    """The server at `url` is up (a 401 for want of a key is up too)."""
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
