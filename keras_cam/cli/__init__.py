"""The `keras-cam` command line (also `python -m keras_cam`).

Each subcommand is one module (`explain`, `filters`, `demo`) with its `HELP`, `DESCRIPTION`,
`add_arguments(parser)` and `run(args) -> int`, registered in `COMMANDS`. Errors are one line on stderr,
`keras-cam: error: <what to fix>`, never a traceback (unless KERAS_CAM_DEBUG=1).
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable, Dict, NamedTuple, Optional, Sequence

from keras_cam.cli import _common, demo, explain, filters  # noqa: F401  (_common: cli._common for tests)
from keras_cam.cli import audit
from keras_cam._validation import one_line
from keras_cam.cli._common import INTERNAL_ERROR, PROG, USER_ERRORS, native_stderr_captured

__all__ = ["COMMANDS", "INTERNAL_ERROR", "PROG", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (argparse prints the whole usage first)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")




class Command(NamedTuple):
    """A subcommand: its one-line help, its --help description, and its two functions."""

    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: name -> Command, in the order `keras-cam --help` lists them.
COMMANDS: Dict[str, Command] = {
    module.__name__.rsplit(".", 1)[-1]: Command(module.HELP, module.DESCRIPTION, module.add_arguments, module.run)
    for module in (explain, filters, demo)
}
COMMANDS["audit"] = Command(audit.HELP, audit.DESCRIPTION, audit.add_arguments, audit.run)


def build_parser(with_arguments: bool = True) -> argparse.ArgumentParser:
    """The argument parser with one subparser per entry of `COMMANDS` (their arguments read defaults from
    modules that import Keras: `with_arguments=False` lists the commands only)."""
    parser = _Parser(
        prog=PROG,
        description="Class activation maps, Grad-CAM family heatmaps and filter visualization for Keras 3 "
                    "models (TensorFlow, JAX or PyTorch backend: set KERAS_BACKEND). Errors are one line; "
                    "KERAS_CAM_DEBUG=1 adds the traceback.",
    )
    from keras_cam import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.description)
        if with_arguments:
            command.add_arguments(sub)
        sub.set_defaults(_run=command.run)
    return parser


# Allocation failures, by type name (torch, TensorFlow: no backend import) and by text (XLA's, OpenCV's, ...).
_OUT_OF_MEMORY_TYPES = ("OutOfMemoryError", "ResourceExhaustedError")
_OUT_OF_MEMORY_TEXTS = ("Failed to allocate", "RESOURCE_EXHAUSTED", "Insufficient memory", "out of memory",
                        "OOM when allocating")


def _out_of_memory(error: BaseException) -> bool:
    """MemoryError, torch's OutOfMemoryError, TensorFlow's ResourceExhaustedError, XLA's RESOURCE_EXHAUSTED
    and OpenCV's "Failed to allocate"."""
    if isinstance(error, MemoryError) or type(error).__name__ in _OUT_OF_MEMORY_TYPES:
        return True
    return any(text in str(error) for text in _OUT_OF_MEMORY_TEXTS)


def _report(error: BaseException) -> int:
    """Prints an error from a subcommand as one line on stderr; returns the exit status."""
    if os.environ.get("KERAS_CAM_DEBUG", "") not in ("", "0"):
        traceback.print_exception(type(error), error, error.__traceback__)
    message = one_line(error)
    if _out_of_memory(error):
        line, status = (f"out of memory ({message[:300]}); use a smaller --batch-size or --size, or smaller "
                        "images"), 2
    elif isinstance(error, USER_ERRORS) or type(error).__module__.startswith("cv2"):
        # One line, like argparse's own errors: the library's messages already say what to fix.
        line, status = message, 2
    else:
        line, status = (f"{type(error).__name__}: {message} (unexpected: set KERAS_CAM_DEBUG=1 for the "
                        "traceback)"), INTERNAL_ERROR
    print(f"{PROG}: error: {line}", file=sys.stderr)
    return status


_BACKENDS = ("tensorflow", "jax", "torch")


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def backend_to_use(environ: Dict[str, str], configured: str, installed: Callable[[str], bool] = _installed
                   ) -> Optional[str]:
    """The Keras backend the command line runs on: `KERAS_BACKEND` when set, else Keras' configured one
    (keras.json, TensorFlow by default) when installed, else the first installed of TensorFlow, JAX and
    PyTorch; None when none is installed."""
    if environ.get("KERAS_BACKEND"):
        return environ["KERAS_BACKEND"]
    for name in (configured,) + _BACKENDS:
        if installed(name):
            return name
    return None


def _configured_backend() -> str:
    """The backend in Keras' config file (`$KERAS_HOME/keras.json`, else `~/.keras/keras.json`)."""
    import json

    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return str(json.load(f).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def _import_backend() -> None:
    """Imports Keras and its backend without their start-up logs (TensorFlow prints several lines of
    absl/oneDNN notices to the process's stderr, which would bury our one-line errors). With no
    `KERAS_BACKEND` set, an installed backend is chosen (see `backend_to_use`)."""
    if "keras" in sys.modules:
        return
    chosen = backend_to_use(os.environ, _configured_backend())
    if chosen is None:
        raise ImportError("no Keras backend is installed: pip install 'keras-cam[tensorflow]' (or "
                          "'keras-cam[jax]', 'keras-cam[torch]')")
    if chosen not in _BACKENDS:
        raise ImportError(f"KERAS_BACKEND is '{chosen}', which keras-cam does not run on: set it to tensorflow, "
                          "jax or torch")
    os.environ["KERAS_BACKEND"] = chosen
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_captured() as log:
        try:
            import keras  # noqa: F401
        except Exception as e:  # the backend is missing or broken: say which, with its own log
            log.seek(0)
            details = log.read().decode(errors="replace").strip()
            backend = os.environ.get("KERAS_BACKEND", "tensorflow")
            raise ImportError(
                f"could not import Keras with the '{backend}' backend ({type(e).__name__}: {e}); install it "
                f"(pip install 'keras-cam[{backend}]') or set KERAS_BACKEND to an installed one"
                + (f"; backend log: {details.splitlines()[-1]}" if details else "")
            ) from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit status.

    0 ok; 1 some images skipped (`explain`); 2 a usage, input or model error, or nothing could be done;
    3 an unexpected error (a bug); 130 interrupted. Errors print one line to stderr,
    `keras-cam: error: <what to fix>`, without a traceback (KERAS_CAM_DEBUG=1 prints it first).

    Args:
        argv: the arguments without the program name (default: `sys.argv[1:]`).
    """
    arguments = list(argv) if argv is not None else sys.argv[1:]
    if arguments[:1] == ["--version"]:  # needs no backend
        from keras_cam import __version__

        print(f"{PROG} {__version__}")
        return 0
    try:
        _import_backend()  # first: the parser reads defaults from modules that import Keras
    except ImportError as e:
        message = " ".join(str(e).split())
        if arguments[:1] in (["-h"], ["--help"]):  # the commands can still be listed
            build_parser(with_arguments=False).print_help()
            print(f"\nNote: {message}")
            return 0
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    parser = build_parser()
    try:
        args = parser.parse_args(arguments)
    except SystemExit as e:  # --help (0) or a usage error (2, already printed): report it as a status
        return e.code if isinstance(e.code, int) else 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every error is one line; _report says which kind
        return _report(e)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
