"""The `operator-scale` scenario's verdicts and its printed table (see bench/operator_scale.py)."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]
TARGET_PIPELINES, TARGET_SECONDS, TARGET_RSS_BYTES = 1000, 120.0, 300e6


def targets(result: Json) -> list[tuple[str, bool | None, str]]:
    """(goal, met or None when not judged, measured) of both targets."""
    judged, count = result["pipelines"] >= TARGET_PIPELINES, result["pipelines"]
    took, peak_bytes = result["reconciledSeconds"], result["operator"]["peakRssMiB"] * 2**20
    in_time = (f"{count:,} in {took:.1f} s" if took is not None
               else f"{result['withStatusWithinTarget']:,} of {count:,} within {TARGET_SECONDS:.0f} s")  # fmt: skip
    return [
        (f"{TARGET_PIPELINES:,} Pipelines reconciled within {TARGET_SECONDS:.0f} s",
         (took is not None and took <= TARGET_SECONDS) if judged else None, in_time),
        (f"operator peak RSS under {TARGET_RSS_BYTES / 1e6:.0f} MB",
         peak_bytes < TARGET_RSS_BYTES if judged else None, f"{peak_bytes / 1e6:.0f} MB"),
    ]  # fmt: skip


def table(result: Json) -> str:
    latency, passes, op = result["latencySeconds"] or {}, result["operatorPasses"], result["operator"]
    took, control = result["reconciledSeconds"], result["controlPlaneCpuSeconds"]
    rows = [
        ("measure", "value"),
        ("Pipelines created (last create answered)", f"{result['pipelines']:,} in {result['createdSeconds']:.1f} s"),
        ("all reconciled (first create -> last status)", f"{took:.1f} s" if took is not None else "NOT within the timeout"),
        (f"with a status within {TARGET_SECONDS:.0f} s", f"{result['withStatusWithinTarget']:,}"),
        ("reconcile latency p50 / p99 / max (create -> status)",
         " / ".join(f"{latency[key]:.2f}" for key in ("p50", "p99", "max")) + " s" if latency else "-"),
        ("one pass p50 / p99 (operator histogram bucket)",
         f"<= {passes['p50AtMostSeconds']} / <= {passes['p99AtMostSeconds']} s"),
        ("passes (mean time) / failed and retried",
         f"{passes['passes']:,.0f} ({passes['meanSeconds'] or 0:.3f} s) / {result['failedPasses']:,.0f}"),
        ("operator CPU during the run / with start-up", f"{op['cpuSeconds']:.1f} s / {op['cpuSecondsWithStartUp']:.1f} s"),
        ("operator RSS peak / at the end / after start-up",
         f"{op['peakRssMiB']:.1f} / {op['rssMiB']:.1f} / {op['rssAfterStartUpMiB']:.1f} MiB"),
        ("operator runnable but waiting for a CPU", f"{op['waitingForCpuSeconds']:.1f} s"),
        ("control plane CPU during the run",
         ", ".join(f"{name} {seconds:.1f} s" for name, seconds in control.items() if seconds is not None)),
        ("this client's CPU (creates, watch, listings)", f"{result['benchClientCpuSeconds']:.1f} s"),
        ("phases / worker pods",
         f"{', '.join(f'{k} {v:,.0f}' for k, v in result['phases'].items())} / {result['workerPods']}"),
    ]  # fmt: skip
    width = max(len(label) for label, _ in rows)
    lines = [f"{label.ljust(width)}  {value}" for label, value in rows]
    lines.insert(1, f"{'-' * width}  {'-' * max(len(value) for _, value in rows)}")
    for goal, met, measured in targets(result):
        verdict = "not judged (fewer than 1,000 Pipelines)" if met is None else "met" if met else "NOT met"
        lines.append(f"target {goal}: {verdict} ({measured})")
    if result["otherOperatorProcesses"] or result["createdByThisOperator"] < result["pipelines"]:
        lines.append(f"note: {result['otherOperatorProcesses']} other operator process(es) ran meanwhile (watching "
                     f"every namespace, they reconcile these Pipelines too); this one created the children of "
                     f"{result['createdByThisOperator']:,} of the {result['pipelines']:,}")  # fmt: skip
    return "\n".join(["", *lines])
