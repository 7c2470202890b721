"""`python -m bench run <scenario> [options]`: run a benchmark scenario and print its table.

Run it from the repository root with the project's virtualenv, the local stack up:

    python3 -m hack.stack up postgres mariadb kafka
    .venv/bin/python -m bench run pg-kafka
    .venv/bin/python -m bench run mysql-kafka
    .venv/bin/python -m bench run pg-latency
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import latency, mysql_kafka, pg_kafka, scenario
from hack.stack.config import Settings


def _positive(text: str) -> int:
    value = int(text.replace("_", ""))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _runner(chosen: scenario.Scenario[Any]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        options = scenario.Options(
            contenders=tuple(args.only) if args.only else chosen.contenders,
            rows=args.rows,
            tx_rows=args.tx_rows,
            batch_events=args.batch_events,
            partitions=args.partitions,
            timeout=args.timeout,
            profile=args.profile,
            results_dir=args.results_dir,
            keep_logs=args.keep_logs,
        )
        return scenario.run(chosen, options)

    return run


def _add_scenario(
    scenarios: argparse._SubParsersAction[argparse.ArgumentParser],
    chosen: scenario.Scenario[Any],
    *,
    summary: str,
    description: str,
) -> None:
    """One scenario's sub-command; every scenario takes the same options."""
    parser = scenarios.add_parser(
        chosen.name,
        help=summary,
        description=description.strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=_positive, default=200_000, help="rows inserted (default 200000)")
    parser.add_argument("--tx-rows", type=_positive, default=1000, help="rows per transaction (default 1000)")
    parser.add_argument(
        "--batch-events",
        type=_positive,
        default=5000,
        help="the worker's spec.batch.maxEvents (default 5000)",
    )
    parser.add_argument(
        "--partitions", type=_positive, default=1, help="partitions of the fresh topic (default 1)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds a contender may take before it fails (default 900)",
    )
    parser.add_argument(
        "--only", action="append", choices=chosen.contenders, help="run only this contender (repeatable)"
    )
    parser.add_argument(
        "--profile",
        choices=("sample", "cprofile", "pyinstrument"),
        help="run the worker under a profiler and keep the profile next to the results: `sample` "
        "(bench.sampler: stdlib, CPU-time sampling of every thread, <1%% overhead; prints its report), `cprofile` "
        "(.pstats, the main thread only) or `pyinstrument` (.pyisession; install it into the venv yourself, it is "
        "not a project dependency)",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=scenario.RESULTS_DIR,
        help="where the JSON goes (default bench/results)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="copy each contender's log next to the results"
    )
    parser.set_defaults(handler=_runner(chosen))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="DeltaForge benchmarks.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    run = commands.add_parser("run", help="run a scenario", description="Run a benchmark scenario.")
    scenarios = run.add_subparsers(title="scenarios", metavar="SCENARIO")
    _add_scenario(
        scenarios,
        pg_kafka.PgKafka(),
        summary="PostgreSQL -> Kafka: the worker against pg_recvlogical on one change set",
        description=pg_kafka.__doc__ or "",
    )
    _add_scenario(
        scenarios,
        mysql_kafka.MysqlKafka(),
        summary="MariaDB -> Kafka: the worker against mysql-replication's decode-only ceiling on one change set",
        description=mysql_kafka.__doc__ or "",
    )
    latency_parser = scenarios.add_parser(
        "pg-latency",
        help="PostgreSQL -> Kafka: end-to-end latency of the worker at a steady write rate",
        description=(latency.__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    latency_parser.add_argument("--rate", type=_positive, default=5000, help="rows per second (default 5000)")
    latency_parser.add_argument("--seconds", type=float, default=20.0, help="how long to write (default 20)")
    latency_parser.add_argument(
        "--tx-rows", type=_positive, default=50, help="rows per transaction (default 50)"
    )
    latency_parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for every change (default 300)"
    )
    latency_parser.set_defaults(handler=_run_latency)
    return parser


def _run_latency(args: argparse.Namespace) -> int:
    options = latency.LatencyOptions(
        rate=args.rate, seconds=args.seconds, tx_rows=args.tx_rows, timeout=args.timeout
    )
    result = latency.measure(Settings.from_environment(), options)
    print(latency.report(result, options))
    return 0


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
