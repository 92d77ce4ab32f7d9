"""What tracing costs: `python -m bench.tracing_cost [--rounds R --sagas N]`.

Runs the benchmark (`python -m bench`, without the pgbench ceiling) with tracing on (every span exported
over OTLP to a receiver in this process) and off (`OTEL_SDK_DISABLED=true`), R rounds of one run each.
The order alternates (on/off, then off/on) so that a slow drift of the machine's speed does not favour
either side, and each round's two runs are compared with each other: the cost reported is the median of
the per-round ratios, with the range. On a shared 2-core machine one run's throughput can differ from the
next identical one by 15% or more, which is why a single pair of runs says little.
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import UTC, datetime
from typing import Any

import uvloop

from bench.__main__ import RESULTS, arguments, bench


def run(tracing: bool, args: argparse.Namespace) -> dict[str, Any]:
    options = arguments().parse_args(
        ["--sagas", str(args.sagas), "--concurrency", str(args.concurrency), "--serial", str(args.serial),
         "--sample-ratio", str(args.sample_ratio), *([] if tracing else ["--no-tracing"])]
    )  # fmt: skip
    result = uvloop.run(bench(options))
    if result["check"] != "OK":
        raise SystemExit(f"sagaline check failed: {result['check']}")
    loaded, serial = result["phases"][f"c{args.concurrency}"], result["phases"]["c1"]
    print(
        f"  tracing {'on ' if tracing else 'off'}: c{args.concurrency} {loaded['sagas_per_second']:6.1f} sagas/s"
        f" (cpu {loaded['cpu_seconds_per_saga'] * 1000:5.1f} ms/saga), c1 {serial['sagas_per_second']:5.1f} sagas/s"
        f" p50 {serial['latency_ms']['p50']} ms, spans exported {result['spans_exported']}",
        flush=True,
    )
    return {"loaded": loaded, "serial": serial, "spans_exported": result["spans_exported"]}


def cost(on: float, off: float) -> float:
    """Throughput lost to tracing, in percent of the untraced throughput."""
    return round((1 - on / off) * 100, 1)


def summarize(rounds: list[dict[str, Any]], phase: str) -> dict[str, Any]:
    """Median and range of the paired costs, and the median throughput on each side."""
    costs = [r[f"{phase}_cost_percent"] for r in rounds]
    return {
        "median_cost_percent": statistics.median(costs),
        "range_cost_percent": [min(costs), max(costs)],
        "median_sagas_per_second_on": round(statistics.median(r["on"][phase]["sagas_per_second"] for r in rounds), 1),
        "median_sagas_per_second_off": round(statistics.median(r["off"][phase]["sagas_per_second"] for r in rounds), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sagas", type=int, default=600, help="sagas in the loaded phase of each run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--serial", type=int, default=100, help="sagas in the concurrency-1 phase of each run")
    parser.add_argument("--sample-ratio", type=float, default=1.0, help="share of sagas traced when on")
    args = parser.parse_args()
    rounds = []
    for number in range(args.rounds):
        print(f"round {number + 1}/{args.rounds}", flush=True)
        order = (True, False) if number % 2 == 0 else (False, True)
        runs = {tracing: run(tracing, args) for tracing in order}
        on, off = runs[True], runs[False]
        rounds.append({
            "on": on, "off": off,
            "loaded_cost_percent": cost(on["loaded"]["sagas_per_second"], off["loaded"]["sagas_per_second"]),
            "serial_cost_percent": cost(on["serial"]["sagas_per_second"], off["serial"]["sagas_per_second"]),
        })  # fmt: skip
    summary = {phase: summarize(rounds, phase) for phase in ("loaded", "serial")}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"tracing-cost-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps({"args": vars(args), "summary": summary, "rounds": rounds}, indent=2))
    for phase, label in (("loaded", f"c{args.concurrency}"), ("serial", "c1")):
        s = summary[phase]
        print(
            f"{label}: tracing on {s['median_sagas_per_second_on']} sagas/s, off {s['median_sagas_per_second_off']}"
            f" (medians); cost {s['median_cost_percent']}% (median of {args.rounds} paired rounds,"
            f" range {s['range_cost_percent'][0]}..{s['range_cost_percent'][1]}%)"
        )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
