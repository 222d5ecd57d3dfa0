"""``logapm``: the command line. Each command lives in its own module, which registers its parser.

A command module defines ``register(subparsers) -> None`` and sets ``func`` (``args -> int`` exit status)
as the parser default. The table below is the one list of commands; a module that is not part of this
installation (an optional part) is left out of ``--help`` rather than breaking the CLI.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

# Before anything imports numpy: its OpenBLAS starts a thread per core at import, which spins for 0.03-0.1 CPU s
# (measured: `python -c "import numpy"` 0.17-0.21 -> 0.14-0.16 user s with it at 1) although no command does
# linear algebra; the forked workers never had them (OpenBLAS stops its threads at fork). A user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from aggregator import process_exit

# command module, in the order --help lists them
COMMAND_MODULES: tuple[str, ...] = (
    "aggregator.commands.demo",
    "aggregator.commands.run",
    "aggregator.commands.metrics",
    "aggregator.commands.trace",
    "aggregator.commands.report",
    "alerting.commands",
    "alerting.export_commands",
    "aggregator.commands.sample",
    "aggregator.commands.schema",
)


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    return _build(modules)[0]


def _build(modules: Sequence[str]) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:  # type: ignore[type-arg]
    parser = argparse.ArgumentParser(
        prog="logapm",
        description="APM-grade metrics for Django and Celery from their own JSON logs.",
    )
    from logging_apm import __version__

    parser.add_argument("--version", action="version", version=f"logapm {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Only the command module itself may be absent; a missing dependency inside it is a real error.
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser, subparsers


def parser_for(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser for ``argv``: when it starts with a command whose module is named after it (``run`` ->
    ``aggregator.commands.run``), that module's alone; importing every command module was ~20 ms of each
    ``logapm run``. Otherwise, or when that module does not define the command, all of them."""
    if argv and not argv[0].startswith("-"):
        for name in COMMAND_MODULES:
            if name.startswith("aggregator.commands.") and name.rpartition(".")[2] == argv[0]:
                parser, subparsers = _build((name,))
                if argv[0] in subparsers.choices:
                    return parser
    return build_parser()


def main(argv: Sequence[str] | None = None) -> int:
    process_exit.reset()
    parser = parser_for(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry() -> NoReturn:
    """The ``logapm`` process: ``main``, then the process ends (without the interpreter's teardown when the
    command declared it may: ``aggregator.process_exit``)."""
    process_exit.arm()
    single_threaded_blas()
    process_exit.end(main())


def single_threaded_blas() -> None:
    """Numpy's OpenBLAS, unless the environment says otherwise, without threads of its own. When numpy
    loads, OpenBLAS starts a thread for each further core, and each spins about 0.1 s waiting for work
    before it sleeps: in a 1M-event ``logapm run``, 60-70 ms of CPU beside the set-up (the parent's CPU until
    the workers fork 0.17 -> 0.11 s), into the read once the set-up is quick, where the workers want both
    cores. logapm multiplies no float matrices (the only work BLAS threads do), so they never had anything to
    do. OpenBLAS reads the variable when numpy loads: the process's entry sets it before any command runs."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


if __name__ == "__main__":
    entry()
