"""Serve a GGUF from the TUI: `edgetune serve` in a child process (the app keeps it across screens
and stops it on quit), and the URL and a curl line to use it."""
from __future__ import annotations

from pathlib import Path

from textual.message import Message
from textual.widgets import Static

from edgetune import EdgetuneError, cache_dir
from edgetune import serve as serve_mod

from ..display import one_line


class ServeDone(Message):
    """The server started (lines to show), or the one line that says why not."""

    def __init__(self, key: str, lines: list[str], error: str = "") -> None:
        super().__init__()
        self.key, self.lines, self.error = key, lines, error


class ServePanel(Static):
    """`toggle(target)` starts the server of a run folder or GGUF, or stops it when it runs."""

    def __init__(self, **kwargs):
        super().__init__("", classes="status serve", **kwargs)

    def toggle(self, target: str | Path) -> None:
        try:
            t = serve_mod.resolve(target)
        except EdgetuneError as e:
            self.show(str(e), error=True)
            return
        servers = self.app.servers
        key = str(t.gguf.resolve())
        if key in servers and servers[key].running:
            servers.pop(key).stop()
            self.show(f"stopped serving {t.gguf.name}")
            return
        self.show(f"starting the server for {t.gguf.name}…")
        self.run_worker(lambda: self._start(key, t), thread=True, group="serve")

    def _start(self, key: str, t: serve_mod.Target) -> None:
        try:
            server = serve_mod.ServerProcess(t, log=cache_dir() / "logs" / "serve.log")
            (cache_dir() / "logs").mkdir(parents=True, exist_ok=True)
            server.start()
        except EdgetuneError as e:
            self.post_message(ServeDone(key, [], str(e)))
            return
        except Exception as e:
            self.post_message(ServeDone(key, [], one_line(e)))
            return
        self.app.servers[key] = server
        self.post_message(ServeDone(key, server.usage() + ["Serve again stops it; quitting edgetune stops it too."]))

    def on_serve_done(self, message: ServeDone) -> None:
        message.stop()
        self.show(message.error or "\n".join(message.lines), error=bool(message.error))

    def show(self, text: str, error: bool = False) -> None:
        self.update(text)
        self.set_class(error, "error")

    def serving(self, target: str | Path) -> list[str] | None:
        """The usage lines of the server this target has running, if any."""
        try:
            key = str(serve_mod.resolve(target).gguf.resolve())
        except EdgetuneError:
            return None
        server = self.app.servers.get(key)
        return server.usage() if server and server.running else None
