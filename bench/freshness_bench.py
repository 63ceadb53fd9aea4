#!/usr/bin/env python3
"""Quiver benchmark: freshness of the online store, from an event produced to Kafka to the
moment a read sees it.

A local broker (scripts/kafka.sh) and `quiver run configs/fraud-kafka.yaml --serve`, with a
short checkpoint interval and events whose event time is the moment they are produced (no
disorder, so `max_lateness: 0s`). A producer sends transactions at a fixed rate over 4
partitions; meanwhile a poller reads `GET /v1/views` every few milliseconds and records each
online commit (its watermark and commit time). An event at time t is visible online from the
first commit whose watermark is past t; its freshness is that commit's time minus t. The first
seconds (`--warmup`: the consumer joining, the first checkpoint with whole state) are produced
at the same rate but not counted. Prints p50/p99 over the counted events, for each checkpoint
interval given, and how many commits the poller did not see (`unseen`: their events count
from the next commit it saw, so many of them would overstate the delays).

The rate is half of the maximum the run sustains in the same setup, measured first: the
producer sends as fast as it can, and the maximum is the events it sent divided by the time
until the last of them was visible online (so it is what the run kept up with end to end,
not what the producer managed).

    python3 bench/freshness_bench.py [--seconds 20] [--intervals 50ms,100ms] [--rate N]

QUIVER_BIN=<path> runs another build (A/B comparisons); `CPU µs/event` is the run's CPU time
(user and system, start-up and warm-up included) per event sent.

Needs target/release/quiver, Java 17 and Maven (the broker), confluent-kafka in the Python
running it.
"""
import argparse
import bisect
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import config_text, free_port, start_broker, stop_broker  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUIVER = Path(os.environ.get("QUIVER_BIN", ROOT / "target" / "release" / "quiver"))
CONFIG = ROOT / "configs" / "fraud-kafka.yaml"


def producer(broker):
    from confluent_kafka import Producer
    return Producer({"bootstrap.servers": broker, "linger.ms": 1, "queue.buffering.max.messages": 1_000_000})


def produce(p, topic, rate, seconds, seed):
    """Sends `rate` events/s for `seconds` (as fast as possible when rate is None); returns
    the event times (ms) sent and the rate achieved."""
    rng = random.Random(seed)
    times = []
    start = time.time()
    sent = 0
    txn = seed * 10_000_000
    while True:
        now = time.time()
        if now - start >= seconds:
            break
        due = seconds * 1e9 if rate is None else (now - start) * rate
        burst = 0
        while sent < due and burst < 500:
            t = int(time.time() * 1000)
            card = f"card_{rng.randrange(50_000):06d}"
            value = json.dumps({"txn_id": txn, "card_id": card, "merchant_id": f"merch_{rng.randrange(2000):05d}",
                                "amount": round(rng.uniform(1, 500), 2), "mcc": 5411, "country": "US",
                                "event_time": t})
            while True:
                try:
                    p.produce(topic, value.encode(), key=card.encode())
                    break
                except BufferError:
                    p.poll(0.01)
            times.append(t)
            sent += 1
            txn += 1
            burst += 1
        p.poll(0)
        if rate is not None and sent >= due:
            time.sleep(0.0005)
    p.flush()
    return times, len(times) / (time.time() - start)


def nudge(p, topic, partitions, seed):
    """One event, timed now, into each of the topic's `partitions`."""
    for partition in range(partitions):
        t = int(time.time() * 1000)
        value = json.dumps({"txn_id": seed * 10_000_000 + partition, "card_id": f"card_nudge_{partition}",
                            "merchant_id": "merch_00000", "amount": 1.0, "mcc": 5411, "country": "US",
                            "event_time": t})
        p.produce(topic, value.encode(), partition=partition)
    p.flush()


def poll_commits(port, stop, commits):
    conn = None
    while not stop.is_set():
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v1/views")
            views = json.loads(conn.getresponse().read())["views"]
            card = next(v for v in views if v["view"] == "card_features")
            online = card.get("online")
            if online and online["watermark"]:
                commits[online["epoch"]] = (online["watermark"], online["committed_at"])
        except (OSError, ValueError, StopIteration, http.client.HTTPException):
            conn = None
        time.sleep(0.003)


def consume_rows(broker, topic, stop, arrivals):
    """Records when each feature row of `topic` reaches a read_committed consumer: txn_id ->
    arrival time (ms)."""
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": broker, "group.id": f"fresh-{topic}", "isolation.level": "read_committed",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "fetch.wait.max.ms": 5})
    c.subscribe([topic])
    try:
        while not stop.is_set():
            for m in c.consume(1000, 0.05):
                if m.error() is None:
                    now = time.time() * 1000
                    arrivals.setdefault(json.loads(m.value())["txn_id"], now)
    finally:
        c.close()


def percentiles(delays):
    delays = sorted(delays)
    pick = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))]  # noqa: E731
    return pick(0.5), pick(0.99), delays[-1]


def cpu_seconds(pid):
    """User and system CPU seconds of process `pid` so far (Linux), 0 where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def micros(rfc3339):
    from datetime import datetime
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1e6)


def trial(broker, work, interval, rate, seconds, seed, warmup, output_topic=False):
    """One run at `rate` events/s (as fast as possible when None) for `warmup` + `seconds`;
    freshness of the events after the warm-up (online, and in the output topic if asked)."""
    topic = f"freshness-{seed}"
    rows_topic = f"freshness-rows-{seed}"
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": broker})  # kept alive until the topic exists
    topics = [NewTopic(topic, 4, 1)] + ([NewTopic(rows_topic, 4, 1)] if output_topic else [])
    for future in admin.create_topics(topics).values():
        future.result()
    text = config_text(CONFIG)
    if output_topic:
        text = text.replace("output:\n", "output:\n  kafka:\n    bootstrap_servers: ${QUIVER_KAFKA_BOOTSTRAP}\n"
                            f"    views: {{card_features: {rows_topic}}}\n    transactional_id: fresh-{seed}\n", 1)
    text = text.replace("topics: [transactions]", f"topics: [{topic}]")
    text = text.replace("max_lateness: 5s", "max_lateness: 0s").replace("idle_timeout: 10s", "idle_timeout: 1s")
    text = text.replace("interval: 500ms", f"interval: {interval}")
    cfg = work / f"fresh-{seed}.yaml"
    cfg.write_text(text)
    port = free_port()
    out = work / f"out-{seed}"
    run = subprocess.Popen([str(QUIVER), "run", str(cfg), "--output", str(out), "--no-progress",
                            "--serve", f"127.0.0.1:{port}"], env={**os.environ, "QUIVER_KAFKA_BOOTSTRAP": broker},
                           stdout=open(work / f"run-{seed}.txt", "w"))
    commits = {}
    warm_times = []
    stop = threading.Event()
    poller = threading.Thread(target=poll_commits, args=(port, stop, commits))
    poller.start()
    arrivals = {}
    rows = threading.Thread(target=consume_rows, args=(broker, rows_topic, stop, arrivals)) if output_topic else None
    if rows:
        rows.start()
    try:
        p = producer(broker)
        # The warm-up goes at the measured rate (or a moderate one before a flood), so the
        # counted events find the run in its steady state.
        warm_times, _ = produce(p, topic, rate or 5000, warmup, seed)
        times, achieved = produce(p, topic, rate, seconds, seed + 1)
        last = max(times)
        first_txn = (seed + 1) * 10_000_000
        deadline = time.time() + 120
        while time.time() < deadline:
            online_done = any(micros(w) > last * 1000 for w, _ in list(commits.values()))
            rows_done = not output_topic or first_txn + len(times) - 1 in arrivals
            if online_done and rows_done:
                break
            # Keep the watermark moving past the last event: one more event in every partition
            # now and then (a partition without any would hold it until its idle timeout).
            nudge(p, topic, 4, seed + 2)
            time.sleep(0.05)
    finally:
        cpu = cpu_seconds(run.pid)
        stop.set()
        poller.join()
        if rows:
            rows.join()
        run.terminate()
        run.wait()
    stamps = sorted((micros(w), micros(c)) for w, c in commits.values())
    seen = sorted(commits)
    missed = seen[-1] - seen[0] + 1 - len(seen) if seen else 0
    watermarks = [w for w, _ in stamps]
    delays = []
    for t in times:
        i = bisect.bisect_right(watermarks, t * 1000)
        if i < len(stamps):
            delays.append((stamps[i][1] - t * 1000) / 1000)
    if not delays:
        sys.exit(f"no event became visible online; see {work / f'run-{seed}.txt'}")
    # End to end: from the first counted event to the commit that showed the last one.
    visible = min(c for w, c in stamps if w > last * 1000)
    sustained = len(times) / max(1e-3, visible / 1e6 - min(times) / 1000)
    p50, p99, worst = percentiles(delays)
    result = {"events": len(times), "seen": len(delays), "rate": achieved, "p50": p50, "p99": p99,
              "max": worst, "commits": len(stamps), "missed": missed, "sustained": sustained,
              "cpu_us": cpu * 1e6 / max(1, len(warm_times) + len(times))}
    if output_topic:
        row_delays = [arrivals[first_txn + i] - t for i, t in enumerate(times) if first_txn + i in arrivals]
        if len(row_delays) < len(times):
            print(f"warning: {len(times) - len(row_delays)} counted events never reached {rows_topic}", file=sys.stderr)
        result["rows"] = (len(row_delays),) + percentiles(row_delays)
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20, help="counted seconds per interval")
    ap.add_argument("--warmup", type=float, default=3, help="seconds produced first and not counted")
    ap.add_argument("--intervals", default="50ms,100ms")
    ap.add_argument("--rate", type=float, help="events/s (default: half the maximum measured first)")
    ap.add_argument("--output-topic", action="store_true",
                    help="also send card_features to an output topic (output.kafka, transactional) and time "
                         "each row's arrival at a read_committed consumer")
    args = ap.parse_args()
    if not QUIVER.exists():
        sys.exit("build it first: cargo build --release")
    work = Path(tempfile.mkdtemp(prefix="quiver-freshness-"))
    broker_dir = work / "broker"
    broker = start_broker(broker_dir)
    try:
        rate = args.rate
        if rate is None:
            first = args.intervals.split(",")[0]
            probe = trial(broker, work, first, None, 5, 1, args.warmup, args.output_topic)
            rate = probe["sustained"] / 2
            print(f"maximum: the producer sent {probe['rate']:,.0f} events/s; the run made them visible at "
                  f"{probe['sustained']:,.0f} events/s end to end ({first} checkpoints); "
                  f"measuring at half: {rate:,.0f} events/s", file=sys.stderr)
        rows = []
        for n, interval in enumerate(args.intervals.split(",")):
            rows.append((interval, trial(broker, work, interval, rate, args.seconds, 100 + 10 * n, args.warmup,
                                         args.output_topic)))
    finally:
        stop_broker(broker_dir)
    print(f"\nfreshness of the online store (event produced -> visible to reads), {rate:,.0f} events/s target")
    print(f"{'checkpoint interval':20} {'events':>8} {'events/s':>9} {'commits':>8} {'unseen':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'CPU µs/event':>13}")
    for interval, r in rows:
        print(f"{interval:20} {r['seen']:8,} {r['rate']:9,.0f} {r['commits']:8} {r['missed']:7} {r['p50']:8.1f} {r['p99']:8.1f} "
              f"{r['max']:8.1f} {r['cpu_us']:13.1f}")
    if args.output_topic:
        print("\nfreshness of the output topic (event produced -> its feature row read by a read_committed consumer)")
        print(f"{'checkpoint interval':20} {'rows':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for interval, r in rows:
            n, p50, p99, worst = r["rows"]
            print(f"{interval:20} {n:8,} {p50:8.1f} {p99:8.1f} {worst:8.1f}")
    # The broker's log and the runs' outputs (hundreds of MB); a failed run leaves them.
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
