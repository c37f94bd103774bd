"""Serve a GGUF from the TUI: `edgetune serve` in a child process (the app keeps it across screens
and stops it on quit), and the URL and a curl line to use it.

One server per file: Serve on a file that is being served (or is starting) says so and asks before
stopping it, never starts a second one. The panel polls the server it shows: one that died (a crash,
a kill) is shown stopped with its exit and last line of output, not as running."""
from __future__ import annotations

from pathlib import Path

from textual.content import Content
from textual.message import Message
from textual.widgets import Static

from edgetune import EdgetuneError, cache_dir
from edgetune import serve as serve_mod

from ..display import one_line
from ..screens.confirm import ConfirmScreen

POLL_S = 1.0  # how often the panel checks that its server still runs


class ServeDone(Message):
    """The server started (lines to show), or the one line that says why not."""

    def __init__(self, key: str, lines: list[str], error: str = "") -> None:
        super().__init__()
        self.key, self.lines, self.error = key, lines, error


def server_key(target: str | Path) -> str | None:
    """What app.servers is keyed by: the served GGUF's resolved path (None: nothing to serve)."""
    try:
        return str(serve_mod.resolve(target).gguf.resolve())
    except EdgetuneError:
        return None


class ServePanel(Static):
    """`toggle(target)` starts the server of a run folder or GGUF, or offers to stop the one running."""

    def __init__(self, **kwargs):
        super().__init__("", classes="status serve", **kwargs)
        self.key: str | None = None  # the server this panel shows
        self.reported = None  # the dead server whose end it shows (said once, not at every poll)

    def on_mount(self) -> None:
        self.set_interval(POLL_S, self.poll)

    def toggle(self, target: str | Path) -> None:
        try:
            t = serve_mod.resolve(target)
        except EdgetuneError as e:
            self.show(str(e), error=True)
            return
        key = self.key = str(t.gguf.resolve())
        server = self.app.servers.get(key)
        if server is not None and not server.died:
            self._already(key, server)
            return
        server = self.app.server_process(t, log=cache_dir() / "logs" / f"serve-{t.gguf.stem}.log")
        self.app.servers[key] = server  # before it answers: a second press finds it starting
        self.show(f"starting the server for {t.gguf.name} at {server.url}…")
        self.run_worker(lambda: self._start(key, server), thread=True, group="serve")

    def _already(self, key: str, server) -> None:
        if not server.ready:
            self.show(f"already starting the server for {server.target.gguf.name} at {server.url}…")
            return
        self.show("\n".join(server.usage()))

        def answered(stop: bool | None) -> None:
            if stop and self.app.servers.get(key) is server:
                self.app.servers.pop(key).stop()
                self.show(f"stopped serving {server.target.gguf.name}")
        self.app.push_screen(ConfirmScreen(f"Already serving {server.target.gguf.name} at {server.url}.\n"
                                           "Stop this server?"), answered)

    def _start(self, key: str, server) -> None:
        try:
            (cache_dir() / "logs").mkdir(parents=True, exist_ok=True)
            server.start()
        except EdgetuneError as e:
            self.post_message(ServeDone(key, [], str(e)))
            return
        except Exception as e:
            self.post_message(ServeDone(key, [], one_line(e)))
            return
        self.post_message(ServeDone(key, server.usage() + ["Serve again offers to stop it; quitting edgetune stops it too."]))

    def on_serve_done(self, message: ServeDone) -> None:
        message.stop()
        if message.error:
            self.app.servers.pop(message.key, None)
        if message.key == self.key:
            self.show(message.error or "\n".join(message.lines), error=bool(message.error))

    def show(self, text: str, error: bool = False) -> None:
        self.update(Content(text))  # literal: a curl line's JSON and paths are not markup
        self.set_class(error, "error")

    def show_server_of(self, target: str | Path) -> None:
        """Show the state of the target's server: its URL and curl line while it runs, how it ended
        if it died, nothing when there is none (another file's lines are cleared)."""
        key, self.key = self.key, server_key(target)
        server = self.app.servers.get(self.key) if self.key else None
        if server is None:
            if key != self.key:  # the same file: what was said about it stays ("stopped serving ...")
                self.show("")
        elif server.died:
            self._ended(server)
        else:
            self.show("\n".join(server.usage()) if server.ready else
                      f"starting the server for {server.target.gguf.name} at {server.url}…")

    def poll(self) -> None:
        server = self.app.servers.get(self.key) if self.key else None
        if server is not None and server.ready and server.died and server is not self.reported:
            self._ended(server)

    def _ended(self, server) -> None:
        """A dead server stays in app.servers (other screens' panels show it ended too) until Serve replaces it."""
        self.reported = server
        self.show(f"the server for {server.target.gguf.name} at {server.url} stopped ({server.exit_reason()}); "
                  "Serve starts it again", error=True)
