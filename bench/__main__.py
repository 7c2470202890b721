"""`python -m bench run <scenario> [options]`: run a benchmark scenario and print its table.

Run it from the repository root with the project's virtualenv, the local stack up:

    python3 -m hack.stack up postgres mariadb kafka
    .venv/bin/python -m bench run pg-kafka
    .venv/bin/python -m bench run mysql-kafka
    .venv/bin/python -m bench run pg-redis        # with redis up instead of (or besides) kafka
    .venv/bin/python -m bench run pg-latency
    .venv/bin/python -m bench run mysql-latency
    .venv/bin/python -m bench run operator-scale  # python3 -m hack.stack up k8s
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import (
    latency,
    mysql_kafka,
    mysql_latency,
    operator_scale,
    pg_kafka,
    pg_latency,
    pg_redis,
    scenario,
)
from bench.shapes import SHAPES
from hack.stack.config import Settings

ROWS = 200_000
# Small transactions are slow to write (a commit each: about 11k/s on PostgreSQL and 3k/s on
# MariaDB on the 2-core development VM, a third of that with neighbours) and slower to read per
# event (every transaction has its own begin and commit), so their default is smaller.
SMALL_TX_ROWS, SMALL_TX_DEFAULT_ROWS = 100, 20_000


def _positive(text: str) -> int:
    value = int(text.replace("_", ""))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _runner(chosen: scenario.Scenario[Any]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        options = scenario.Options(
            contenders=tuple(args.only) if args.only else chosen.contenders,
            rows=args.rows or (SMALL_TX_DEFAULT_ROWS if args.tx_rows < SMALL_TX_ROWS else ROWS),
            tx_rows=args.tx_rows,
            shape=args.shape,
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
    parser.add_argument(
        "--rows",
        type=_positive,
        help=f"rows inserted (default {ROWS}, or {SMALL_TX_DEFAULT_ROWS} with --tx-rows under {SMALL_TX_ROWS}: "
        "each small transaction is a commit of its own: on a quiet 2-core machine about 11k/s on PostgreSQL "
        "and 3k/s on MariaDB, so 200000 1-row transactions take 20-70 s to write, and every reader is "
        "slower per event on them too)",
    )
    parser.add_argument(
        "--tx-rows",
        type=_positive,
        default=1000,
        help="rows per transaction (default 1000; 1 gives single-row transactions)",
    )
    parser.add_argument(
        "--shape",
        choices=tuple(SHAPES),
        default="narrow",
        help="the table: narrow (5 columns, the default) or wide (30 columns of mixed types with a JSON "
        "column; see bench/shapes.py)",
    )
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
        choices=("sample", "cprofile", "pyinstrument", "memray"),
        help="run the worker under a profiler and keep the profile next to the results: `sample` "
        "(bench.sampler: stdlib, CPU-time sampling of every thread, <1%% overhead; prints its report), `cprofile` "
        "(.pstats, the main thread only), `pyinstrument` (.pyisession) or `memray` (.memray.bin: what held the "
        "memory at its peak, native frames included); install the last two into the venv yourself, they are not "
        "project dependencies",
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
    _add_scenario(
        scenarios,
        pg_redis.PgRedis(),
        summary="PostgreSQL -> Redis Streams: the worker against pg_recvlogical on one change set",
        description=pg_redis.__doc__ or "",
    )
    for backend in (pg_latency.PgLatency(), mysql_latency.MysqlLatency()):
        _add_latency(scenarios, backend)
    operator_scale.add_parser(scenarios, _positive)
    return parser


def _add_latency(
    scenarios: argparse._SubParsersAction[argparse.ArgumentParser], backend: latency.Backend
) -> None:
    """One latency scenario's sub-command; both take the same options."""
    parser = scenarios.add_parser(
        backend.name,
        help=f"{backend.database} -> Kafka: end-to-end latency of the worker at a steady write rate",
        description="\n\n".join(
            (module.__doc__ or "").strip() for module in (latency, sys.modules[type(backend).__module__])
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rate", type=_positive, default=5000, help="rows per second (default 5000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to write (default 20)")
    parser.add_argument("--tx-rows", type=_positive, default=50, help="rows per transaction (default 50)")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for every change (default 300)"
    )

    def run(args: argparse.Namespace) -> int:
        options = latency.LatencyOptions(
            rate=args.rate, seconds=args.seconds, tx_rows=args.tx_rows, timeout=args.timeout
        )
        result = latency.measure(backend, Settings.from_environment(), options)
        print(latency.report(backend, result, options))
        return 0

    parser.set_defaults(handler=run)


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
