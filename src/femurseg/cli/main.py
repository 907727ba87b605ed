"""``femurseg <verb>``: the single entry point.

Each verb lives in ``femurseg.cli.<verb>`` and exposes ``register(subparsers)``, which adds its parser and sets
``func`` (a callable ``(args) -> int``).  Heavy imports happen inside ``func`` so ``femurseg --help`` is instant.
Errors that femurseg raises on purpose (:class:`femurseg.errors.FemursegError`) print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from femurseg._version import __version__
from femurseg.errors import FemursegError

#: Sub-command modules, in the order ``--help`` lists them.
VERBS: tuple[str, ...] = ("info", "segment", "view", "qct", "evaluate", "train", "protocol", "phantom")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="femurseg",
        description="Proximal femur segmentation and analysis for hip QCT.",
    )
    parser.add_argument("--version", action="version", version=f"femurseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for name in VERBS:
        importlib.import_module(f"femurseg.cli.{name}").register(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so every ``finally`` runs (staged outputs are removed) before exiting."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``femurseg`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code.

    SIGINT and SIGTERM unwind the run (removing staged outputs) and exit 130 and 143 with one line.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, for records (protocol runs)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (an embedding application): leave its signals alone
        previous = None
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe fails here, inside the handlers below, not at interpreter exit
        return code
    except FemursegError as err:
        print(f"femurseg: error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:
        # The reader of stdout went away (``femurseg evaluate … | head``): what was written stays; exit as a shell does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        return 141
    except KeyboardInterrupt:
        print("femurseg: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("femurseg: terminated", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
