"""How paths and errors read on screen: short, one line, stable across machines."""
from __future__ import annotations

from pathlib import Path

from edgetune import BUILTIN, EdgetuneError, RunFolder, open_report, write_reports


def shown_path(path: str | Path) -> str:
    """Relative to the working folder when inside it, else with ~ for home."""
    p = Path(path).expanduser().resolve()
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            rel = p.relative_to(base)
        except ValueError:
            continue
        return prefix + str(rel) if str(rel) != "." else (prefix.rstrip("/") or ".")
    return str(p)


def one_line(e: BaseException) -> str:
    """An unexpected exception as one line (type and first line): the UI never shows a traceback."""
    first = (str(e).splitlines() or [""])[0][:200]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def base_label(base: str) -> str:
    """A base model as a short name: built-ins and hub ids as typed, local paths by their last part."""
    if base in BUILTIN or not Path(base).expanduser().exists():
        return base
    return Path(base).name


def show_status(screen, message: str, error: bool = False) -> None:
    """Write the screen's one status line (#error), red when it is an error. The text is literal, not
    markup: "[conversation forgotten]", a path or an error with brackets would otherwise vanish."""
    from textual.content import Content
    from textual.widgets import Static
    line = screen.query_one("#error", Static)
    line.update(Content(message))
    line.set_class(error, "error")


def report_opened(folder: RunFolder) -> str:
    """Open the run's report.html in the system's browser where there is one (built first for a run
    from before report.html); the line saying what happened."""
    page = folder.report_html
    if not page.is_file():
        try:
            write_reports(folder)
        except EdgetuneError as e:
            return f"no report: {e}"
    if open_report(page):
        return f"report opened in the browser: {shown_path(page)}"
    return f"report: {shown_path(page)} (no graphical browser here)"
