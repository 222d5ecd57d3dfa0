"""``logapm run``: one aggregator run (read new log lines, update the windows, deliver, alert).

Exit status: 0 done; 1 the run failed before its commit (nothing changed); 2 bad arguments or
configuration; 3 committed, but a post-commit stage (delivery, alerting) reported a failure; 75
(EX_TEMPFAIL) another run holds the lock, nothing was done.
"""

from __future__ import annotations

import argparse
import sys

from aggregator import collector, process_exit


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "run", help="one aggregator run: new log lines -> windows -> sinks and alerts",
        description="Read what the app wrote since the last run, update the metric windows in the state store "
                    "(exactly once, even if killed), deliver the changed windows and evaluate the alert rules.",
        epilog="exit status: 0 ok, 1 failed (nothing committed), 2 usage or configuration error, "
               "3 committed but delivery or alerting failed, 75 another run holds the lock",
    )
    parser.add_argument("--input", "-i", action="append", metavar="PATH", default=None,
                        help="log file, glob or directory (repeatable; default: run.inputs / LOGAPM_INPUTS)")
    parser.add_argument("--state", metavar="PATH", help="state store file (default: run.state / LOGAPM_STATE)")
    parser.add_argument("--config", metavar="FILE", help="TOML config file (default: LOGAPM_CONFIG)")
    parser.add_argument("--workers", type=int, metavar="N", help="decoder processes (default: one per core)")
    parser.add_argument("--window-seconds", type=int, metavar="S", help="window width (default 60)")
    parser.add_argument("--dead-letter", metavar="PATH", help="dead-letter file for invalid lines")
    parser.add_argument("--no-trace-insights", action="store_true",
                        help="skip joining events by trace (run.trace_insights = false)")
    parser.add_argument("--engine", choices=("local", "dask"),
                        help="where parts are decoded: local processes, or a Dask cluster (run.engine)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="Dask scheduler address for --engine dask (run.dask_scheduler; default: a "
                             "LocalCluster for this run)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing unless something failed")
    parser.add_argument("--no-progress", action="store_true", help="never draw a progress bar")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # No collections while the run's modules load either (``execute`` turns the collector back on after the
    # read); back on whichever way the command ends.
    with collector.paused():
        status = _run_command(args)
    # Every path here returns with the store closed, the run lock released and the dead letters' and the
    # sinks' files written and closed (or, failing, never opened), the summary printed.
    process_exit.finished()
    return status


def _run_command(args: argparse.Namespace) -> int:
    from aggregator.config import ConfigError, load_config
    from aggregator.progress import Progress
    from aggregator.run import EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_STAGE_FAILED, EXIT_USAGE, execute
    from aggregator.store import LockedError, StoreError
    from aggregator.summary import summary_lines

    overrides = {
        "run.inputs": args.input, "run.state": args.state, "run.workers": args.workers,
        "run.window_seconds": args.window_seconds, "run.dead_letter": args.dead_letter,
        "run.trace_insights": False if args.no_trace_insights else None,
        "run.engine": args.engine, "run.dask_scheduler": args.scheduler,
    }
    try:
        config = load_config(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"logapm run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    inputs = list(config["run.inputs"])
    if not inputs:
        print("logapm run: no input: give --input PATH (or set run.inputs / LOGAPM_INPUTS)", file=sys.stderr)
        return EXIT_USAGE
    if int(config["run.window_seconds"]) <= 0:
        print("logapm run: run.window_seconds must be positive", file=sys.stderr)
        return EXIT_USAGE
    if config["run.engine"] not in ("local", "dask"):
        print(f"logapm run: run.engine must be local or dask, not {config['run.engine']!r}", file=sys.stderr)
        return EXIT_USAGE
    progress = None if args.quiet or args.no_progress else Progress()
    from aggregator.engine import tune_malloc

    tune_malloc()  # this process ends with the run: its heap may keep what it frees (workers inherit it)
    from aggregator.dask_engine import DaskEngineError
    from aggregator.sources import InputError

    try:
        report = execute(config, inputs=inputs, state_path=config["run.state"],
                         interactive=sys.stdout.isatty(), progress=progress)
    except LockedError as exc:
        print(f"logapm run: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except (StoreError, InputError, DaskEngineError) as exc:
        print(f"logapm run: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not args.quiet or not report.ok:
        for line in summary_lines(report):
            print(line)
    process_exit.keep(report)
    return EXIT_OK if report.ok else EXIT_STAGE_FAILED
