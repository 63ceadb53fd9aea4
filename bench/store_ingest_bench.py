#!/usr/bin/env python3
"""Quiver benchmark: the cost of committing a streaming run into the feature store. The same
`quiver run` over the same events, once writing feature rows to an output directory and once
with `--store` (Delta commits of feature rows and events per checkpoint epoch, windows warmed
up from the event log first), in the same session; prints events/s and the ratio.

    python3 bench/store_ingest_bench.py [--events 1000000] [--history 100000] [--runs 3]

Needs target/release/quiver (cargo build --release).
"""
import argparse
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import measured, sh  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "fraud-demo.yaml"
QUIVER = ROOT / "target" / "release" / "quiver"


def events_per_second(summary):
    m = re.search(r"events in [0-9.]+ s \(([0-9,]+) events/s", summary)
    return float(m.group(1).replace(",", "")) if m else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--history", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not QUIVER.exists():
        sys.exit("build first: cargo build --release")
    out = ROOT / "bench" / "out" / "store_ingest"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    history = out / "history.parquet"
    stream = out / "stream.parquet"
    # The history spans about a day from 2026-01-01; the stream starts after it.
    sh([QUIVER, "generate", "--events", str(args.history), "--from", CONFIG, "--seed", "1",
        "--events-per-second", str(max(1, args.history // 86_400)), "--out", history])
    sh([QUIVER, "generate", "--events", str(args.events), "--from", CONFIG, "--seed", "2",
        "--start", "2026-01-03T00:00:00Z", "--out", stream])
    applied = out / "applied"
    sh([QUIVER, "apply", CONFIG, "--store", applied, "--input", history, "--no-progress"])
    best = {"off": None, "on": None}
    for i in range(args.runs):
        for mode in ("off", "on"):
            run_out = out / f"run-{mode}-{i}"
            cmd = [QUIVER, "run", CONFIG, "--input", stream, "--output", run_out, "--no-progress"]
            if mode == "on":
                store = out / f"store-{i}"
                shutil.copytree(applied, store)
                cmd += ["--store", store]
            seconds, peak, summary = measured(cmd)
            eps = events_per_second(summary)
            if best[mode] is None or eps > best[mode][0]:
                best[mode] = (eps, seconds, peak)
    off, on = best["off"], best["on"]
    print(f"\nquiver run over {args.events:,} events (fraud demo views), best of {args.runs}; "
          f"store on: {args.history:,} applied events of history to warm up from\n")
    print("| mode | events/s | seconds | peak MiB |")
    print("|---|---|---|---|")
    print(f"| output directory (store off) | {off[0]:,.0f} | {off[1]:.2f} | {off[2]:.0f} |")
    print(f"| --store (Delta commits per epoch) | {on[0]:,.0f} | {on[1]:.2f} | {on[2]:.0f} |")
    print(f"\nstore on / off: {on[0] / off[0]:.0%} of the throughput (target >= 70%)")


main()
