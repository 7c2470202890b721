"""`python -m bench run <scenario> [options]`: run a benchmark scenario and print its table.

Run it from the repository root with the project's virtualenv, the local stack up:

    python3 -m hack.stack up postgres kafka
    .venv/bin/python -m bench run pg-kafka
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench import pg_kafka


def _positive(text: str) -> int:
    value = int(text.replace("_", ""))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _run_pg_kafka(args: argparse.Namespace) -> int:
    contenders = tuple(args.only) if args.only else pg_kafka.CONTENDERS
    options = pg_kafka.Options(
        rows=args.rows,
        tx_rows=args.tx_rows,
        batch_events=args.batch_events,
        partitions=args.partitions,
        timeout=args.timeout,
        contenders=contenders,
        profile=args.profile,
        results_dir=args.results_dir,
        keep_logs=args.keep_logs,
    )
    return pg_kafka.run(options)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="DeltaForge benchmarks.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    run = commands.add_parser("run", help="run a scenario", description="Run a benchmark scenario.")
    scenarios = run.add_subparsers(title="scenarios", metavar="SCENARIO")

    pg = scenarios.add_parser(
        "pg-kafka",
        help="PostgreSQL -> Kafka: the worker against pg_recvlogical on one change set",
        description=(pg_kafka.__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pg.add_argument("--rows", type=_positive, default=200_000, help="rows inserted (default 200000)")
    pg.add_argument("--tx-rows", type=_positive, default=1000, help="rows per transaction (default 1000)")
    pg.add_argument(
        "--batch-events",
        type=_positive,
        default=5000,
        help="the worker's spec.batch.maxEvents (default 5000)",
    )
    pg.add_argument(
        "--partitions", type=_positive, default=1, help="partitions of the fresh topic (default 1)"
    )
    pg.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds a contender may take before it fails (default 900)",
    )
    pg.add_argument(
        "--only", action="append", choices=pg_kafka.CONTENDERS, help="run only this contender (repeatable)"
    )
    pg.add_argument(
        "--profile",
        choices=("sample", "cprofile", "pyinstrument"),
        help="run the worker under a profiler and keep the profile next to the results: `sample` "
        "(bench.sampler: stdlib, CPU-time sampling, <1%% overhead; prints its report), `cprofile` (.pstats) or "
        "`pyinstrument` (.pyisession; install it into the venv yourself, it is not a project dependency)",
    )
    pg.add_argument(
        "--results-dir",
        type=Path,
        default=pg_kafka.RESULTS_DIR,
        help="where the JSON goes (default bench/results)",
    )
    pg.add_argument("--keep-logs", action="store_true", help="copy each contender's log next to the results")
    pg.set_defaults(handler=_run_pg_kafka)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        result: int = handler(args)
    except RuntimeError as error:  # a contender failed: its message says why (and its log tail)
        print(f"bench: {error}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
