#!/usr/bin/env python3
"""Quiver checkpoint benchmark: the cost of exactly-once output on the fraud demo.

    python3 bench/checkpoint_bench.py [--events 6000000] [--runs 3]

Measures, in the same run on the same machine:
- `quiver run` without intermediate checkpoints vs with a checkpoint every second
  (best of N each): overhead ratio, checkpoint count, size and time;
- recovery: a run killed with SIGKILL half way, then the same command again: the resumed
  run's wall time against a whole run's, and that its feature rows equal the uninterrupted
  run's row count.
Builds the release binary first.
"""
import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import config_text  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "fraud-demo.yaml"
QUIVER = ROOT / "target" / "release" / "quiver"
CONFIG_USED = CONFIG


def run(args, out, summary):
    cmd = [str(QUIVER), "run", str(CONFIG_USED), "--output", str(out), "--no-progress",
           "--summary-json", str(summary)] + args
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, json.loads(Path(summary).read_text())


def rows(summary):
    return sum(v["rows"] for v in summary["views"])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=6_000_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--no-online", action="store_true",
                   help="without the online store (on by default: each checkpoint also writes its changed keys there)")
    a = p.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "quiver-pipeline"], cwd=ROOT,
                   check=True)
    tmp = Path(tempfile.mkdtemp(prefix="quiver-ckpt-"))
    global CONFIG_USED
    if a.no_online:
        CONFIG_USED = tmp / "no-online.yaml"
        CONFIG_USED.write_text(config_text(CONFIG) + "\nonline: {enabled: false}\n")
    events = ["--events", str(a.events)]
    try:
        best = {}
        for name, extra in [("none", ["--no-checkpoints"]),
                            ("every 1s", ["--checkpoint-interval", "1s"])]:
            for i in range(a.runs):
                out = tmp / f"{name.replace(' ', '')}-{i}"
                took, s = run(events + extra + ["--fresh"], out, tmp / "s.json")
                if name not in best or took < best[name][0]:
                    best[name] = (took, s)
                shutil.rmtree(out, ignore_errors=True)
        base, with_ckpt = best["none"], best["every 1s"]
        c = with_ckpt[1]["checkpoints"]
        print(f"\n{a.events:,} events, best of {a.runs}")
        print(f"  no intermediate checkpoints: {base[0]:.2f} s")
        print(f"  checkpoint every 1 s:        {with_ckpt[0]:.2f} s  "
              f"({c['count']} checkpoints, largest {c['max_bytes'] / 2**20:.1f} MiB, "
              f"ingestion paused {c['total_s']:.2f} s in all, longest pause {c['max_s']:.2f} s, "
              f"longest barrier-to-durable {c['max_commit_s']:.2f} s)")
        print(f"  overhead: {100 * (with_ckpt[0] / base[0] - 1):+.1f}%  (target <= 10%)")

        # Recovery: kill -9 0.3 s after the first checkpoint is on disk, then resume.
        out = tmp / "recovery"
        cmd = [str(QUIVER), "run", str(CONFIG_USED), "--output", str(out), "--no-progress",
               "--checkpoint-interval", "1s"] + events
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        while not list((out / "_checkpoints").glob("*.qvck")):
            if proc.poll() is not None:
                sys.exit("the run ended before its first checkpoint: use more --events")
            time.sleep(0.01)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = time.perf_counter() - start
        took, s = run(events + ["--checkpoint-interval", "1s"], out, tmp / "r.json")
        resumed = s["checkpoints"]["resumed_from"]
        print(f"  kill -9 at {killed_at:.2f} s, then the same command: resumed after "
              f"checkpoint {resumed}, finished in {took:.2f} s "
              f"({100 * took / with_ckpt[0]:.0f}% of a whole run)")
        same = rows(s) == rows(with_ckpt[1])
        print(f"  feature rows after recovery: {rows(s):,} "
              f"({'equal to' if same else 'DIFFERENT from'} the uninterrupted run)")
        if not same or resumed is None:
            sys.exit("recovery check failed")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
