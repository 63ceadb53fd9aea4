#!/usr/bin/env python3
"""Quiver benchmark: reading features online, against Feast in the same run.

Runs the fraud demo into the online store (embedded redb file, a Redis server, a three-node
Redis Cluster on loopback ports) and reads 6 card features for 1 and 100 cards per request:

  - in-process: `quiver get --repeat` (the reader the server uses, without HTTP) and Feast's
    `FeatureStore.get_online_features` (its local SQLite online store, materialized from the
    same feature rows);
  - over loopback HTTP with concurrent clients (keep-alive, one process per client, the same
    client code for every server): `quiver serve` on each store, and `feast serve`.

Quiver computes each window ending at the request time from the stored window state; Feast
returns the values of each card's last event as they were materialized (it has no notion of
windows ending now), so it does less work per read. Peers are measured in the same run; ratios
are Quiver / Feast.

    python3 bench/serving_bench.py [--events 1000000] [--requests 2000] [--clients 4]

Needs target/release/quiver (cargo build --release), redis-server and redis-cli, and feast in the Python
running it (pip install feast).
"""
import argparse
import glob
import http.client
import json
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import config_text, free_port, sh  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUIVER = ROOT / "target" / "release" / "quiver"
CONFIG = ROOT / "configs" / "fraud-demo.yaml"
FEATURES = ["txn_count_10m", "micro_count_10m", "amount_sum_1h", "amount_avg_24h", "amount_max_24h", "amount_stddev_7d"]


def wait_http(port, path, deadline=120):
    end = time.time() + deadline
    while time.time() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"the server on {port} never answered {path}")


def summary(latencies, seconds):
    latencies = sorted(latencies)
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    return {"p50": pick(0.5) * 1e3, "p99": pick(0.99) * 1e3, "qps": len(latencies) / seconds}


def client(args):
    """One keep-alive client: `requests` POSTs of `batch` random cards; returns latencies."""
    port, path, kind, cards, batch, requests, seed, at = args
    rng = random.Random(seed)
    # Bodies are built before the clock starts, so that the clients (which share the machine
    # with the server) spend their CPU on HTTP, not on drawing cards and encoding JSON.
    bodies = []
    for _ in range(requests + 20):
        chosen = rng.sample(cards, batch)
        if kind == "quiver":
            body = {"view": "card_features", "entities": chosen, "features": FEATURES, "at": at}
        else:
            body = {"features": [f"card_features:{f}" for f in FEATURES], "entities": {"card_id": chosen}}
        bodies.append(json.dumps(body).encode())
    conn = http.client.HTTPConnection("127.0.0.1", port)
    lat = []
    for i, data in enumerate(bodies):
        start = time.perf_counter()
        try:
            conn.request("POST", path, data, {"Content-Type": "application/json"})
            resp = conn.getresponse()
        except (ConnectionError, http.client.HTTPException):
            # The server closed the kept-alive connection: a new one, as any client would.
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port)
            conn.request("POST", path, data, {"Content-Type": "application/json"})
            resp = conn.getresponse()
        payload = resp.read()
        elapsed = time.perf_counter() - start
        if resp.status != 200:
            raise SystemExit(f"{kind} HTTP {resp.status}: {payload[:300]}")
        if i >= 20:  # warm-up
            lat.append(elapsed)
    return lat


def time_http(port, path, kind, cards, batch, requests, clients, at):
    jobs = [(port, path, kind, cards, batch, requests // clients, 7 + c, at) for c in range(clients)]
    start = time.perf_counter()
    with multiprocessing.Pool(clients) as pool:
        parts = pool.map(client, jobs)
    seconds = time.perf_counter() - start
    return summary([x for p in parts for x in p], seconds)


def quiver_in_process(cfg, online_args, cards, batch, requests, at):
    # The same random cards every read (`--repeat` rereads its entities); the HTTP clients draw
    # new ones each time.
    chosen = random.Random(batch).sample(cards, batch)
    out = subprocess.run(
        [str(QUIVER), "get", str(cfg), "card_features", *chosen, "--features", ",".join(FEATURES),
         "--at", at, "--repeat", str(requests), *online_args],
        check=True, capture_output=True, text=True).stdout
    m = re.search(r"p50 ([0-9.]+) ms, p99 ([0-9.]+) ms, ([0-9]+) reads/s", out)
    return {"p50": float(m.group(1)), "p99": float(m.group(2)), "qps": float(m.group(3))}


def feast_repo(work, feature_dir):
    """A Feast repo over Quiver's card feature rows, materialized into its SQLite online store."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, String

    repo = work / "feast"
    (repo / "data").mkdir(parents=True)
    table = pa.concat_tables([pq.read_table(f) for f in glob.glob(str(feature_dir / "*.parquet"))])
    table = table.select(["card_id", "event_time"] + FEATURES)
    table = table.set_column(1, "event_time", pc.cast(table["event_time"], pa.timestamp("us", tz="UTC")))
    for f in FEATURES:
        table = table.set_column(table.schema.get_field_index(f), f, pc.cast(table[f], pa.float64()))
    pq.write_table(table, repo / "data" / "card_features.parquet")
    (repo / "feature_store.yaml").write_text(
        "project: quiverbench\nregistry: data/registry.db\nprovider: local\n"
        "online_store:\n  type: sqlite\n  path: data/online.db\noffline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n")
    card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.STRING)
    source = FileSource(path=str(repo / "data" / "card_features.parquet"), timestamp_field="event_time")
    view = FeatureView(name="card_features", entities=[card], ttl=timedelta(days=3650),
                       schema=[Field(name="card_id", dtype=String)] + [Field(name=f, dtype=Float64) for f in FEATURES],
                       source=source, online=True)
    store = FeatureStore(repo_path=str(repo))
    store.apply([card, view])
    store.materialize(datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc))
    return repo, store


def feast_in_process(store, cards, batch, requests):
    refs = [f"card_features:{f}" for f in FEATURES]
    rng = random.Random(7)
    lat = []
    start = time.perf_counter()
    for i in range(requests + 20):
        rows = [{"card_id": c} for c in rng.sample(cards, batch)]
        s = time.perf_counter()
        store.get_online_features(features=refs, entity_rows=rows).to_dict()
        if i >= 20:
            lat.append(time.perf_counter() - s)
    return summary(lat, time.perf_counter() - start)


def start_cluster(work, procs):
    """A Redis Cluster of three masters on loopback ports (appended to `procs`); its ports."""
    ports = []
    for i in range(3):
        port = free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--cluster-enabled", "yes", "--cluster-port", str(free_port()), "--dir", str(work),
             "--cluster-config-file", f"nodes-{i}.conf"], stdout=subprocess.DEVNULL))
        ports.append(port)
    for port in ports:
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
            time.sleep(0.05)
    sh(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports], "--cluster-replicas", "0",
        "--cluster-yes"], stdout=subprocess.DEVNULL)
    while not all(b"cluster_state:ok" in subprocess.run(["redis-cli", "-p", str(p), "cluster", "info"],
                                                         capture_output=True).stdout for p in ports):
        time.sleep(0.1)
    return ports


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    if not QUIVER.exists():
        sys.exit("build it first: cargo build --release")
    work = Path(tempfile.mkdtemp(prefix="quiver-serving-"))
    redis_port = free_port()
    redis_procs = [subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL)]
    results = {}
    try:
        cluster_ports = start_cluster(work, redis_procs)
        text = config_text(CONFIG)
        configs = {"embedded": work / "embedded.yaml", "redis": work / "redis.yaml",
                   "cluster": work / "cluster.yaml"}
        configs["embedded"].write_text(text)
        configs["redis"].write_text(text + f"\nonline:\n  redis: redis://127.0.0.1:{redis_port}\n")
        nodes = ", ".join(f"redis://127.0.0.1:{p}" for p in cluster_ports)
        configs["cluster"].write_text(text + f"\nonline:\n  redis_cluster: [{nodes}]\n")
        for name, cfg in configs.items():
            sh([str(QUIVER), "run", str(cfg), "--events", str(args.events), "--output", str(work / f"out-{name}"),
                "--no-progress"], stdout=subprocess.DEVNULL)
        online_args = {"embedded": ["--online", str(work / "out-embedded" / "online.redb")], "redis": [],
                       "cluster": []}
        port = free_port()
        proc = subprocess.Popen([str(QUIVER), "serve", str(configs["embedded"]), "--listen", f"127.0.0.1:{port}",
                                 *online_args["embedded"]], stdout=subprocess.DEVNULL)
        wait_http(port, "/readyz")
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("GET", "/v1/views")
        card = next(v for v in json.loads(conn.getresponse().read())["views"] if v["view"] == "card_features")
        proc.terminate()
        proc.wait()
        entities = card["online"]["entities"]
        at = card["online"]["watermark"]  # just after the last event: windows still full
        cards = [f"card_{i:06d}" for i in range(min(entities, 50_000))]

        for name, cfg in configs.items():
            for batch in (1, 100):
                results[("in-process", name, batch)] = quiver_in_process(cfg, online_args[name], cards, batch,
                                                                         args.requests, at)
            port = free_port()
            proc = subprocess.Popen([str(QUIVER), "serve", str(cfg), "--listen", f"127.0.0.1:{port}",
                                     *online_args[name]], stdout=subprocess.DEVNULL)
            try:
                wait_http(port, "/readyz")
                for batch in (1, 100):
                    results[("http", name, batch)] = time_http(port, "/v1/features", "quiver", cards, batch,
                                                               args.requests, args.clients, at)
            finally:
                proc.terminate()
                proc.wait()

        repo, store = feast_repo(work, work / "out-embedded" / "card_features")
        for batch in (1, 100):
            results[("in-process", "feast", batch)] = feast_in_process(store, cards, batch, args.requests)
        port = free_port()
        feast_bin = Path(sys.executable).parent / "feast"
        proc = subprocess.Popen([str(feast_bin), "-c", str(repo), "serve", "-h", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_http(port, "/health")
            for batch in (1, 100):
                results[("http", "feast", batch)] = time_http(port, "/get-online-features", "feast", cards, batch,
                                                              args.requests, args.clients, at)
        finally:
            proc.terminate()
            proc.wait()
    finally:
        for proc in redis_procs:
            proc.terminate()
            proc.wait()

    print(f"\nonline reads of 6 card features, {args.events:,} events, {entities:,} cards; "
          f"HTTP: {args.clients} concurrent keep-alive clients")
    print(f"{'':46} {'p50 ms':>8} {'p99 ms':>8} {'reads/s':>9} {'p99 vs Feast':>13}")
    labels = {"embedded": "quiver, embedded store", "redis": "quiver, Redis store",
              "cluster": "quiver, Redis Cluster (3 nodes)", "feast": "Feast 0.67, SQLite store"}
    for mode in ("in-process", "http"):
        for batch in (1, 100):
            feast = results[(mode, "feast", batch)]
            for name in ("embedded", "redis", "cluster", "feast"):
                r = results[(mode, name, batch)]
                label = f"{labels[name]}, {mode}, {batch} per read"
                print(f"{label:46} {r['p50']:8.3f} {r['p99']:8.3f} {r['qps']:9.0f} {r['p99'] / feast['p99']:12.2f}x")
    # The stores and feature rows (hundreds of MB); a failed run leaves them to look at.
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
