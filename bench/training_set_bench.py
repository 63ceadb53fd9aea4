#!/usr/bin/env python3
"""Quiver benchmark: a point-in-time training set (every card feature of the fraud demo as of
each spine row's time) against DuckDB computing the same windows exactly (events and spine
rows in one window query, the spine rows not counted) and DuckDB's ASOF join (the last stored
feature row at or before the spine time: no window decay, a lower bar). Same machine, same run;
prints seconds, peak memory and ratios, and checks that Quiver's values equal DuckDB's exact
ones.

    python3 bench/training_set_bench.py [--events 10000000] [--spine 1000000]

Needs target/release/quiver (cargo build --release). Peers are pip-installed into bench/.venv.
"""
import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import measured, sh  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV = BENCH / ".venv"
CONFIG = ROOT / "configs" / "fraud-demo.yaml"
QUIVER = ROOT / "target" / "release" / "quiver"

FEATURES = [
    "txn_count_10m",
    "micro_count_10m",
    "amount_sum_1h",
    "amount_avg_24h",
    "amount_max_24h",
    "amount_stddev_7d",
    "txn_count_lifetime",
]


def venv_python():
    py = VENV / "bin" / "python"
    if not py.exists():
        sh([sys.executable, "-m", "venv", str(VENV)])
    probe = subprocess.run([str(py), "-c", "import duckdb, pyarrow"], capture_output=True)
    if probe.returncode != 0:
        sh([str(py), "-m", "pip", "install", "--quiet", "duckdb", "pyarrow", "numpy"])
    return str(py)


SPINE = r'''
import sys, numpy as np, pyarrow as pa, pyarrow.parquet as pq
events, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = pq.read_table(events, columns=["card_id", "event_time"])
cards = t["card_id"].unique().to_numpy(zero_copy_only=False)
times = t["event_time"].cast(pa.int64()).to_numpy()
lo, hi = times.min(), times.max()
rng = np.random.default_rng(7)
pick = rng.integers(0, len(cards), n)
card = cards[pick].astype(object)
card[rng.random(n) < 0.01] = "card_unseen"          # keys without history
ts = rng.integers(lo - 3_600_000_000, hi + 86_400_000_000, n)
exact = rng.random(n) < 0.2                          # ties with an event's own time
ts[exact] = times[rng.integers(0, len(times), int(exact.sum()))]
spine = pa.table({
    "card_id": pa.array(card, pa.string()),
    "ts": pa.array(ts, pa.timestamp("us")),
    "label": pa.array(rng.random(n) < 0.02),
    "row_id": pa.array(np.arange(n)),
})
pq.write_table(spine, out)
'''

# The card view's windows over events and spine rows together; spine rows carry NULL inputs and
# `ev` NULL, so they are never counted. RANGE frames include peers: a spine row sees the events
# at its own time.
DUCKDB_EXACT = r'''
import duckdb, sys
events, spine, out = sys.argv[1:4]
con = duckdb.connect()
con.execute("SET threads TO 2")
con.execute("SET enable_progress_bar = false")
w = lambda r: f"OVER (PARTITION BY card_id ORDER BY t RANGE BETWEEN {r} PRECEDING AND CURRENT ROW)"
con.execute(f"""
COPY (
  WITH u AS (
    SELECT card_id, event_time AS t, amount, is_micro, 1 AS ev, NULL::BIGINT AS row_id
      FROM read_parquet('{events}')
    UNION ALL
    SELECT card_id, ts, NULL, NULL, NULL, row_id FROM read_parquet('{spine}')
      WHERE card_id IS NOT NULL AND ts IS NOT NULL
  ), f AS (
    SELECT row_id,
      count(ev) {w("INTERVAL 10 MINUTES")} AS txn_count_10m,
      sum(is_micro) {w("INTERVAL 10 MINUTES")} AS micro_count_10m,
      sum(amount) {w("INTERVAL 1 HOUR")} AS amount_sum_1h,
      avg(amount) {w("INTERVAL 24 HOURS")} AS amount_avg_24h,
      max(amount) {w("INTERVAL 24 HOURS")} AS amount_max_24h,
      stddev_samp(amount) {w("INTERVAL 7 DAYS")} AS amount_stddev_7d,
      count(ev) OVER (PARTITION BY card_id ORDER BY t RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS txn_count_lifetime
    FROM u
  )
  SELECT * FROM f WHERE row_id IS NOT NULL ORDER BY row_id
) TO '{out}' (FORMAT PARQUET)""")
'''

DUCKDB_ASOF = r'''
import duckdb, sys
features, spine, out = sys.argv[1:4]
con = duckdb.connect()
con.execute("SET threads TO 2")
con.execute("SET enable_progress_bar = false")
con.execute(f"""
COPY (
  SELECT s.row_id, f.txn_count_10m, f.micro_count_10m, f.amount_sum_1h, f.amount_avg_24h,
         f.amount_max_24h, f.amount_stddev_7d, f.txn_count_lifetime
  FROM read_parquet('{spine}') s ASOF LEFT JOIN read_parquet('{features}') f
    ON s.card_id = f.card_id AND s.ts >= f.event_time
) TO '{out}' (FORMAT PARQUET)""")
'''

COMPARE = r'''
import sys, numpy as np, pyarrow.parquet as pq, pyarrow.compute as pc
ours, theirs, features = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
a = pq.read_table(ours)
a = a.filter(pc.and_(pc.is_valid(a["card_id"]), pc.is_valid(a["ts"]))).sort_by("row_id")
b = pq.read_table(theirs).sort_by("row_id")
assert a.num_rows == b.num_rows, (a.num_rows, b.num_rows)
bad = 0
for f in features:
    x = a[f].to_numpy(zero_copy_only=False).astype(float)
    y = b[f].to_numpy(zero_copy_only=False).astype(float)
    xn, yn = np.isnan(x), np.isnan(y)
    both = ~xn & ~yn
    rel = np.abs(x[both] - y[both]) / np.maximum(np.abs(y[both]), 1e-300)
    n = int((xn != yn).sum()) + int((rel > 1e-9).sum())
    bad += n
    print(f"  {f}: {n} of {a.num_rows:,} differ, largest relative difference {rel.max() if rel.size else 0:.1e}")
sys.exit(1 if bad else 0)
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--spine", type=int, default=1_000_000)
    ap.add_argument("--cards", type=int, default=100_000)
    ap.add_argument("--memory-limit", default="512MiB",
                    help="the limit of the second Quiver run (spills to files)")
    args = ap.parse_args()
    if not QUIVER.exists():
        sys.exit("build first: cargo build --release")
    py = venv_python()
    data = BENCH / "data"
    out = BENCH / "out" / "training_set"
    data.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    events_file = data / f"tx-{args.events}-{args.cards}.parquet"
    if not events_file.exists():
        # About 30 days of event time, ending before today.
        sh([QUIVER, "generate", "--events", str(args.events), "--from", CONFIG, "--cards",
            str(args.cards), "--events-per-second", str(max(1, args.events // 2_592_000)),
            "--out", events_file])
    store = out / "store"
    sh(["rm", "-rf", str(store)])
    sh([QUIVER, "apply", CONFIG, "--store", store, "--input", events_file, "--no-progress"],
       stdout=subprocess.DEVNULL)
    event_log = next((store / "events").glob("*/*/events.parquet"))
    card_version = (store / "registry" / "card_features" / "latest").read_text().strip()
    card_rows = store / "offline" / "card_features" / card_version
    spine = out / f"spine-{args.spine}.parquet"
    sh([py, "-c", SPINE, str(event_log), str(spine), str(args.spine)])

    train = out / "train.parquet"
    q_s, q_mem, _ = measured([QUIVER, "training-set", "--store", store, "--spine", spine,
                              "--features", "card_features:*", "--out", train, "--no-progress",
                              "--device", "cpu"])
    # The same under a memory limit far below what the inputs take: spill files, bounded RSS.
    limited = out / "train_limited.parquet"
    l_s, l_mem, _ = measured([QUIVER, "training-set", "--store", store, "--spine", spine,
                              "--features", "card_features:*", "--out", limited,
                              "--no-progress", "--device", "cpu", "--memory-limit",
                              args.memory_limit])
    exact_out = out / "duckdb_exact.parquet"
    d_s, d_mem, _ = measured([py, "-c", DUCKDB_EXACT, str(event_log), str(spine), str(exact_out)])
    asof_out = out / "duckdb_asof.parquet"
    a_s, a_mem, _ = measured([py, "-c", DUCKDB_ASOF, str(card_rows / "*.parquet"), str(spine),
                              str(asof_out)])
    print(f"\ntraining set: {args.spine:,} spine rows, {args.events:,} events "
          f"({args.cards:,} cards), {len(FEATURES)} card features, 2 threads for DuckDB\n")
    print("| engine | seconds | peak MiB | Quiver speedup |")
    print("|---|---|---|---|")
    print(f"| quiver training-set (exact, as of t) | {q_s:.2f} | {q_mem:.0f} | 1.0 |")
    print(f"| quiver training-set --memory-limit {args.memory_limit} | {l_s:.2f} | {l_mem:.0f} | "
          f"{l_s / q_s:.1f} |")
    print(f"| DuckDB exact windows (union + RANGE) | {d_s:.2f} | {d_mem:.0f} | {d_s / q_s:.1f} |")
    print(f"| DuckDB ASOF join (last row, no decay) | {a_s:.2f} | {a_mem:.0f} | {a_s / q_s:.1f} |")
    print("\nQuiver vs DuckDB exact:")
    same = subprocess.run([py, "-c", COMPARE, str(train), str(exact_out), ",".join(FEATURES)])
    print("equal" if same.returncode == 0 else "DIFFERENT")
    print(f"\nQuiver --memory-limit {args.memory_limit} vs DuckDB exact:")
    same = subprocess.run([py, "-c", COMPARE, str(limited), str(exact_out), ",".join(FEATURES)])
    print("equal" if same.returncode == 0 else "DIFFERENT")


main()
