"""Where library output goes. Libraries' log records, Python warnings and llama.cpp's log lines are
written to a log file (a run's `edgetune.log`, or one under the cache); the console shows edgetune's
own lines only (events and errors). With `debug` they reach the console as well.

Three routes, one per kind of source:
- Python `logging` (bitsandbytes, peft, accelerate, ...): a handler on the root logger. transformers,
  datasets and huggingface_hub attach their own stderr handler; it is removed and their records
  propagate to the root like everyone else's.
- Python warnings (transformers' FutureWarnings, ...): `logging.captureWarnings`.
- llama.cpp (C code): its log callback (`llama_log_set`), which llama-cpp-python points at a
  printer to stderr, is pointed at the `llama_cpp` logger instead.
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import sys
from pathlib import Path

# Libraries that install a stderr handler of their own on import, and the module that owns it.
OWN_HANDLERS = {"transformers": "transformers.utils.logging", "datasets": "datasets.utils.logging",
                "huggingface_hub": "huggingface_hub.utils.logging"}
# ggml_log_level (ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 = continue the previous
# line) -> logging level. llama-cpp-python 0.3.36 maps these one off (WARN as ERROR), which is why
# llama.cpp's warnings reached the console even with verbose=False.
LLAMA_LEVELS = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}

_handlers: list[logging.Handler] = []
_llama = {"callback": None, "level": logging.INFO, "partial": ""}


def route(log_file: str | Path | None, debug: bool = False, hf: bool = True, llama: bool = False) -> Path | None:
    """Send library logs and warnings to `log_file` (appended; None: nowhere) and, with `debug`, to
    the console too. `hf`: take over the stderr handlers of transformers, datasets and
    huggingface_hub (imports them, ~3 s); `llama`: llama.cpp's log too (imports llama_cpp). Callable
    again: the previous routing is replaced."""
    root = logging.getLogger()
    for h in _handlers:
        root.removeHandler(h)
        h.close()
    _handlers.clear()
    if log_file is not None:
        log_file = Path(log_file)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, encoding="utf-8", delay=True)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        _handlers.append(handler)
    if debug:
        _handlers.append(logging.StreamHandler(sys.stderr))
    if not _handlers:  # neither file nor console: still keep libraries off the console
        _handlers.append(logging.NullHandler())
    for h in _handlers:
        root.addHandler(h)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    for name, module in OWN_HANDLERS.items() if hf else ():
        _adopt(name, module)
    if llama:
        _route_llama_cpp()
    return log_file


def _adopt(name: str, module: str) -> None:
    """Make a library's logger propagate to the root instead of printing on its own."""
    try:
        lib_logging = importlib.import_module(module)  # the import attaches the library's handler first
    except ImportError:
        return
    logger = logging.getLogger(name)
    for h in list(logger.handlers):
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            logger.removeHandler(h)
    logger.propagate = True
    if hasattr(lib_logging, "disable_default_handler"):  # transformers/datasets re-add it otherwise
        try:
            lib_logging.disable_default_handler()
        except Exception:  # already removed above
            pass


def _route_llama_cpp() -> None:
    import llama_cpp
    import llama_cpp._logger  # noqa: F401  installs llama-cpp-python's printer; ours replaces it below

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        _to_logger(level, text)

    _llama["callback"] = callback  # ctypes would free it while llama.cpp still calls it
    _set_llama_callback(callback)


def _to_logger(level: int, text: bytes) -> None:
    """llama.cpp sends a line in pieces (level 5 continues the last one): join them up to the newline."""
    if level != 5:
        _llama["level"] = LLAMA_LEVELS.get(level, logging.INFO)
    _llama["partial"] += text.decode("utf-8", errors="replace")
    while "\n" in _llama["partial"]:
        line, _llama["partial"] = _llama["partial"].split("\n", 1)
        if line.strip():
            logging.getLogger("llama_cpp").log(_llama["level"], line)


def _set_llama_callback(callback) -> None:
    import llama_cpp
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


@contextlib.contextmanager
def llama_lines(lines: list[str]):
    """Collect llama.cpp's log text into `lines` for the length of the block (callers read it: the
    quantizer's fallbacks, a dry run's predicted size). Where `route` sent llama.cpp's log to a file it
    still goes there too; afterwards the routing in force before is back (llama-cpp-python's own stderr
    printer only where nothing was routed)."""
    import llama_cpp
    import llama_cpp._logger  # installs llama-cpp-python's printer, the default to restore

    routed = _llama["callback"]

    @llama_cpp.llama_log_callback
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", errors="replace"))
        if routed is not None:
            _to_logger(level, text)

    _set_llama_callback(collect)
    try:
        yield lines
    finally:
        _set_llama_callback(routed if routed is not None else llama_cpp._logger.llama_log_callback)
