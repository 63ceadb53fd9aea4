#!/usr/bin/env python3
"""Quiver benchmark: streaming and backfill throughput of the fraud demo's features, against
DuckDB (the same window SQL over the same Parquet file) and Polars (the same rolling windows),
measured in the same run. Prints times, peak memory and ratios.

    python3 bench/backfill_bench.py [--events 1000000]

Peers are pip-installed into bench/.venv on first use.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV = BENCH / ".venv"
CONFIG = ROOT / "configs" / "fraud-demo.yaml"
QUIVER = ROOT / "target" / "release" / "quiver"


def sh(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, **kw)


def measured(cmd, env=None):
    """Runs cmd; returns (seconds, peak RSS in MiB, stdout)."""
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        sys.exit(f"command failed ({status}): {cmd}\n{out.decode(errors='replace')}")
    return elapsed, usage.ru_maxrss / 1024.0, out.decode(errors="replace")


def venv_python():
    py = VENV / "bin" / "python"
    if not py.exists():
        sh([sys.executable, "-m", "venv", str(VENV)])
    probe = subprocess.run([str(py), "-c", "import duckdb, polars"], capture_output=True)
    if probe.returncode != 0:
        sh([str(py), "-m", "pip", "install", "--quiet", "duckdb", "polars"])
    return str(py)


DUCKDB_PEER = r'''
import duckdb, sys, pathlib
data, out, transform, card, merchant = sys.argv[1:6]
con = duckdb.connect()
con.execute("SET threads TO 2")
t = pathlib.Path(transform).read_text().replace("FROM transactions_raw", f"FROM read_parquet('{data}')")
con.execute(f"CREATE VIEW transactions AS {t}")
for name, sql in (("card", card), ("merchant", merchant)):
    q = pathlib.Path(sql).read_text()
    con.execute(f"COPY ({q}) TO '{out}/duckdb_{name}.parquet' (FORMAT PARQUET)")
total = con.execute(f"SELECT sum(txn_count_10m) FROM read_parquet('{out}/duckdb_card.parquet')").fetchone()[0]
print(total)
'''

POLARS_PEER = r'''
import polars as pl, sys
data, out = sys.argv[1:3]
df = pl.read_parquet(data).filter(pl.col("card_id").is_not_null()).with_columns(
    pl.when(pl.col("amount") < 2.0).then(1).otherwise(0).alias("is_micro"))
df = df.sort("event_time")

def rolling(frame, key, period, aggs):
    return frame.rolling(index_column="event_time", period=period, group_by=key, closed="both").agg(aggs)

card = df.sort(["card_id", "event_time"])
parts = [
    rolling(card, "card_id", "10m", [pl.len().alias("txn_count_10m"), pl.col("is_micro").sum().alias("micro_count_10m")]),
    rolling(card, "card_id", "1h", [pl.col("amount").sum().alias("amount_sum_1h")]).select("amount_sum_1h"),
    rolling(card, "card_id", "24h", [pl.col("amount").mean().alias("amount_avg_24h"), pl.col("amount").max().alias("amount_max_24h")]).select("amount_avg_24h", "amount_max_24h"),
    rolling(card, "card_id", "7d", [pl.col("amount").std().alias("amount_stddev_7d")]).select("amount_stddev_7d"),
]
features = pl.concat(parts, how="horizontal").with_columns(
    card.select(pl.col("txn_id"), pl.col("amount"), pl.int_range(pl.len()).over("card_id").add(1).alias("txn_count_lifetime")))
features.write_parquet(f"{out}/polars_card.parquet")
merchant = df.sort(["merchant_id", "event_time"])
m = rolling(merchant, "merchant_id", "1h", [pl.len().alias("txn_count_1h")])
m = pl.concat([m, rolling(merchant, "merchant_id", "24h", [pl.col("amount").mean().alias("amount_avg_24h")]).select("amount_avg_24h")], how="horizontal")
m.write_parquet(f"{out}/polars_merchant.parquet")
print(features["txn_count_10m"].sum())
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    args = ap.parse_args()
    sh(["cargo", "build", "--release", "--locked", "-p", "quiver-pipeline"], cwd=ROOT)
    py = venv_python()
    data_dir = BENCH / "data"
    out = BENCH / "out"
    data_dir.mkdir(exist_ok=True)
    out.mkdir(exist_ok=True)
    data = data_dir / f"transactions-{args.events}.parquet"
    if not data.exists():
        sh([QUIVER, "generate", "--events", str(args.events), "--from", CONFIG, "--out", data])

    results = {}

    def quiver(mode, extra, label):
        summary = out / f"{label}.json"
        secs, rss, _ = measured([QUIVER, mode, CONFIG, "--no-progress", "--summary-json", summary,
                                 "--output", out / label] + extra)
        s = json.loads(summary.read_text())
        results[label] = dict(seconds=secs, rss=rss, events=s["events"],
                              events_s=s["events"] / secs, engine_events_s=s["events"] / max(s["engine_s"], 1e-9))
        return s

    quiver("run", ["--events", str(args.events)], "quiver_run_datagen")
    quiver("run", ["--input", str(data)], "quiver_run_file")
    quiver("backfill", ["--input", str(data)], "quiver_backfill")

    features = ROOT / "configs" / "features"
    secs, rss, dout = measured([py, "-c", DUCKDB_PEER, data, out, ROOT / "configs" / "transforms" / "transactions.sql",
                                features / "card_features.sql", features / "merchant_features.sql"])
    results["duckdb"] = dict(seconds=secs, rss=rss, check=int(float(dout.strip())))
    secs, rss, pout = measured([py, "-c", POLARS_PEER, data, out])
    results["polars"] = dict(seconds=secs, rss=rss, check=int(float(pout.strip())))

    # Sanity check: the peers compute the same features (sum of txn_count_10m over all rows).
    check_q = (f"SELECT sum(txn_count_10m) FROM read_parquet('{out}/quiver_backfill/card_features/*.parquet')")
    qsum = subprocess.run([py, "-c", f"import duckdb; print(duckdb.connect().execute(\"{check_q}\").fetchone()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()

    n = args.events
    print()
    print(f"Quiver benchmark, {n:,} generated transactions, features of configs/fraud-demo.yaml "
          f"(card: 7 windows, merchant: 2), 2-core machine")
    print(f"{'':28}{'seconds':>10}{'events/s':>14}{'engine ev/s':>14}{'peak MiB':>10}")
    for label in ("quiver_run_datagen", "quiver_run_file", "quiver_backfill"):
        r = results[label]
        print(f"{label:28}{r['seconds']:10.2f}{r['events_s']:14,.0f}{r['engine_events_s']:14,.0f}{r['rss']:10.0f}")
    for label in ("duckdb", "polars"):
        r = results[label]
        print(f"{label:28}{r['seconds']:10.2f}{n / r['seconds']:14,.0f}{'':>14}{r['rss']:10.0f}")
    qb = results["quiver_backfill"]["seconds"]
    print()
    print(f"backfill speed-up: {results['duckdb']['seconds'] / qb:.1f}x DuckDB (target >= 10x), "
          f"{results['polars']['seconds'] / qb:.1f}x Polars (target >= 3x)")
    print(f"check sum(txn_count_10m): quiver {qsum}, duckdb {results['duckdb']['check']}, polars {results['polars']['check']}")


if __name__ == "__main__":
    main()
