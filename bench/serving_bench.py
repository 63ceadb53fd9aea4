#!/usr/bin/env python3
"""Quiver benchmark: reading features online. Runs the fraud demo into the online store
(embedded redb file, then a Redis server), serves it with `quiver serve`, and times
`POST /v1/features` from a keep-alive HTTP client: one card per request, and 100 cards per
request, every window ending at the request time (the 7 card features, computed from each
card's stored window state at read time).

Peer, in the same run: the floor of a precomputed-value online store (what Feast-style stores
do: values written at ingestion, read as they are): the same 7 values per card stored as one
Redis string per card, read with GET (one card) and MGET (100 cards) by redis-py. It computes
nothing at read time and does not go through HTTP, so it is a floor, not an equal.

    python3 bench/serving_bench.py [--events 1000000] [--requests 3000]

Needs target/release/quiver (cargo build --release), redis-server, and redis in the Python
running it (pip install redis).
"""
import argparse
import http.client
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import sh  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUIVER = ROOT / "target" / "release" / "quiver"
CONFIG = ROOT / "configs" / "fraud-demo.yaml"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(port, deadline=120):
    end = time.time() + deadline
    while time.time() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"the server on {port} never became ready")


def percentiles(samples):
    samples = sorted(samples)
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]  # noqa: E731
    return {"p50_ms": pick(0.5) * 1e3, "p99_ms": pick(0.99) * 1e3, "mean_ms": statistics.fmean(samples) * 1e3}


def time_http(port, cards, batch, requests, at):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    rng = random.Random(7)
    lat = []
    for i in range(requests + 50):
        body = json.dumps({"view": "card_features", "entities": rng.sample(cards, batch), "at": at})
        start = time.perf_counter()
        conn.request("POST", "/v1/features", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        elapsed = time.perf_counter() - start
        if resp.status != 200:
            sys.exit(f"HTTP {resp.status}: {data[:300]}")
        if i >= 50:  # warm-up
            lat.append(elapsed)
    return percentiles(lat)


def time_redis_peer(port, cards, batch, requests):
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    pipe = r.pipeline(transaction=False)
    for c in cards:
        value = json.dumps({"txn_count_10m": 3, "micro_count_10m": 0, "amount_sum_1h": 120.5,
                            "amount_avg_24h": 40.2, "amount_max_24h": 99.0,
                            "amount_stddev_7d": 12.25, "txn_count_lifetime": 57})
        pipe.set(f"peer:{c}", value)
    pipe.execute()
    rng = random.Random(7)
    lat = []
    for i in range(requests + 50):
        keys = [f"peer:{c}" for c in rng.sample(cards, batch)]
        start = time.perf_counter()
        values = r.get(keys[0]) if batch == 1 else r.mget(keys)
        _ = json.loads(values) if batch == 1 else [json.loads(v) for v in values]
        elapsed = time.perf_counter() - start
        if i >= 50:
            lat.append(elapsed)
    return percentiles(lat)


def serve(config, online_args, port):
    proc = subprocess.Popen(
        [str(QUIVER), "serve", str(config), "--listen", f"127.0.0.1:{port}", *online_args],
        stdout=subprocess.DEVNULL,
    )
    wait_ready(port)
    return proc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    if not QUIVER.exists():
        sys.exit("build it first: cargo build --release")
    work = Path(tempfile.mkdtemp(prefix="quiver-serving-"))
    redis_port = free_port()
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        # The demo config, with its SQL files by absolute path, and a Redis variant.
        text = CONFIG.read_text()
        text = re.sub(r"file: (\S+)", lambda m: f"file: {(CONFIG.parent / m.group(1)).resolve()}", text)
        embedded_cfg = work / "embedded.yaml"
        embedded_cfg.write_text(text)
        redis_cfg = work / "redis.yaml"
        redis_cfg.write_text(text + f"\nonline:\n  redis: redis://127.0.0.1:{redis_port}\n")
        results = {}
        for name, cfg in [("embedded", embedded_cfg), ("redis", redis_cfg)]:
            out = work / f"out-{name}"
            start = time.perf_counter()
            sh([str(QUIVER), "run", str(cfg), "--events", str(args.events), "--output", str(out), "--no-progress"],
               stdout=subprocess.DEVNULL)
            print(f"{name}: run with the online store took {time.perf_counter() - start:.2f} s", file=sys.stderr)
            online_args = ["--online", str(out / "online.redb")] if name == "embedded" else []
            port = free_port()
            proc = serve(cfg, online_args, port)
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port)
                conn.request("GET", "/v1/views")
                views = json.loads(conn.getresponse().read())
                card = next(v for v in views["views"] if v["view"] == "card_features")
                entities = card["online"]["entities"]
                # Cards the generator made (card_000000 ...), read just after the watermark.
                cards = [f"card_{i:06d}" for i in range(min(entities, 50_000))]
                at = card["online"]["watermark"]
                for batch in (1, 100):
                    results[(name, batch)] = time_http(port, cards, batch, args.requests // (1 if batch == 1 else 5), at)
            finally:
                proc.terminate()
                proc.wait()
        for batch in (1, 100):
            results[("peer", batch)] = time_redis_peer(redis_port, cards, batch, args.requests // (1 if batch == 1 else 5))
    finally:
        redis_proc.terminate()
        redis_proc.wait()

    print(f"\nonline reads of card_features (7 features), {args.events:,} events, {entities:,} cards")
    print(f"{'':44} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'p50 vs peer':>12}")
    for batch in (1, 100):
        peer = results[("peer", batch)]
        for name, label in [("embedded", "quiver serve, embedded store"), ("redis", "quiver serve, Redis store"),
                            ("peer", "peer: redis-py GET/MGET of precomputed JSON")]:
            r = results[(name, batch)]
            ratio = r["p50_ms"] / peer["p50_ms"]
            print(f"{label + f', {batch} per request':44} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['mean_ms']:8.3f} {ratio:11.2f}x")


if __name__ == "__main__":
    main()
