"""A low-overhead statistical CPU profiler for a Python process, standard library only.

    python -m bench.sampler OUT.json [--interval SECONDS] -- -m deltaforge run pipeline.json ...

It runs the module (or script) in this interpreter with a SIGPROF timer (ITIMER_PROF, so it
ticks on the process's CPU time, not wall time: waiting in epoll costs no samples). On each tick
the current Python stack of every thread is recorded, weighted by the CPU time that thread used
since the previous tick (its own CPU clock), so work done in other threads than the main one
(the MySQL source's binlog reader, `asyncio.to_thread`) is charged to the right code, and an idle
thread costs nothing. Time spent inside a C function (orjson.dumps, zstd, libpq) is charged to
the Python function that called it. The cost is a few stack walks per tick (well under 1 % at
the default 4 ms), unlike cProfile and pyinstrument, whose per-call hooks inflate code that makes
many small calls (the asyncio machinery above all) two- to threefold, and which see the main
thread only.

`OUT.json` holds the sample count and CPU seconds per (thread, stack); `report()` turns it into
each thread's share and self and inclusive shares.
"""

from __future__ import annotations

import argparse
import collections
import json
import runpy
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

Site = tuple[str, int, str]  # file, first line, function


def _site_name(site: Sequence[Any]) -> str:
    filename, line, function = site
    for marker in ("/site-packages/", "/lib/python3.", "/runtime/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            if marker == "/lib/python3.":
                filename = filename.split("/", 1)[-1]
            break
    return f"{function} ({filename}:{line})"


def _harness(filename: str) -> bool:
    """Frames of this sampler and of runpy, above every stack: not worth a line in the report."""
    return filename == __file__ or filename.endswith("bench/sampler.py") or "runpy" in filename


Key = tuple[str, tuple[Site, ...]]  # thread name, stack (innermost first)


def _stack(frame: FrameType | None) -> tuple[Site, ...]:
    stack: list[Site] = []
    while frame is not None:
        code = frame.f_code
        stack.append((code.co_filename, code.co_firstlineno, code.co_name))
        frame = frame.f_back
    return tuple(stack)


class Sampler:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.stacks: collections.Counter[Key] = collections.Counter()
        self.cpu: collections.defaultdict[Key, float] = collections.defaultdict(float)
        self._clocks: dict[int, float] = {}  # thread ident -> its CPU seconds at the previous tick
        self._names: dict[int, str] = {}

    def _tick(self, _signum: int, _frame: FrameType | None) -> None:
        # Ticks are as coarse as the kernel's HZ (4 ms at HZ=250) and coalesce while C code runs:
        # each thread's sample is weighted by the CPU time it used since the previous tick.
        # The handler holds the GIL, so every thread listed is alive while its clock is read.
        for ident, frame in sys._current_frames().items():
            try:
                now = time.clock_gettime(time.pthread_getcpuclockid(ident))
            except OSError:
                continue
            before = self._clocks.get(ident)
            self._clocks[ident] = now
            if before is None or now <= before:  # first sight (no baseline yet) or idle
                continue
            key = (self._name(ident), _stack(frame))
            self.stacks[key] += 1
            self.cpu[key] += now - before

    def _name(self, ident: int) -> str:
        name = self._names.get(ident)
        if name is None:
            self._names.update(
                (thread.ident, thread.name) for thread in threading.enumerate() if thread.ident
            )
            name = self._names.setdefault(ident, f"thread-{ident}")
        return name

    def start(self) -> None:
        self._clocks = {
            ident: time.clock_gettime(time.pthread_getcpuclockid(ident)) for ident in sys._current_frames()
        }
        signal.signal(signal.SIGPROF, self._tick)
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, signal.SIG_IGN)

    def dump(self, path: Path) -> None:
        document = {
            "interval": self.interval,
            "samples": sum(self.stacks.values()),
            "cpuSeconds": sum(self.cpu.values()),
            "processCpuSeconds": time.process_time(),
            "stacks": [
                {"count": count, "cpu": self.cpu[key], "thread": key[0], "stack": key[1]}
                for key, count in self.stacks.most_common()
            ],
        }
        path.write_text(json.dumps(document))


def report(path: Path, *, top: int = 25) -> str:
    """Self shares (the innermost Python function) and inclusive shares (anywhere on the stack),
    as shares of the sampled CPU time."""
    document = json.loads(path.read_text())
    total = document["cpuSeconds"] or 1.0
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()  # floats: CPU seconds
    threads: collections.Counter[str] = collections.Counter()
    for entry in document["stacks"]:
        threads[entry["thread"]] += entry["cpu"]
        stack = [_site_name(site) for site in entry["stack"] if not _harness(site[0])]
        if not stack:
            continue
        own[stack[0]] += entry["cpu"]
        for name in set(stack):
            inclusive[name] += entry["cpu"]
    lines = [
        f"{document['samples']} samples covering {total:.1f} of the process's "
        f"{document['processCpuSeconds']:.1f} CPU s (the rest: start-up before the first tick, "
        "or after the last)",
        "threads: " + ", ".join(f"{name} {100 * cpu / total:.1f}%" for name, cpu in threads.most_common()),
        "",
        "self (innermost Python function, with the C calls it makes):",
    ]
    lines += [f"  {100 * cpu / total:5.1f}%  {name}" for name, cpu in own.most_common(top)]
    lines += ["", "inclusive (the function and everything it called):"]
    lines += [f"  {100 * cpu / total:5.1f}%  {name}" for name, cpu in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sampler", description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="where the samples go (JSON)")
    parser.add_argument(
        "--interval", type=float, default=0.004, help="CPU seconds between samples (the kernel rounds to HZ)"
    )
    parser.add_argument("--report", action="store_true", help="print the report of OUTPUT and exit")
    parser.add_argument("target", nargs=argparse.REMAINDER, help="-- -m module args... | -- script args...")
    args = parser.parse_args(argv)
    if args.report:
        print(report(args.output))
        return 0
    target = args.target[1:] if args.target[:1] == ["--"] else args.target
    if not target:
        parser.error("nothing to run: give `-- -m module args...` or `-- script args...`")
    sampler = Sampler(args.interval)
    code = 0
    if target[0] == "-m":
        module, sys.argv = target[1], [target[1], *target[2:]]
    else:
        module, sys.argv = None, list(target)
    sampler.start()
    try:
        if module is not None:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(target[0], run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sampler.stop()
        sampler.dump(args.output)
    return code


if __name__ == "__main__":
    sys.exit(main())
