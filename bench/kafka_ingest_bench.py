#!/usr/bin/env python3
"""Quiver benchmark: streaming the fraud demo from Kafka. The same generated transactions are
produced to a topic (4 partitions, a local broker from scripts/kafka.sh) and written to an
NDJSON file; in the same session it times

  - `quiver run` over the topic (`--until-caught-up`: every partition read to its end, the
    6 card and 5 merchant features per event, checkpoints), fresh each time;
  - `quiver run` over the NDJSON file (the same decode rules and features, no broker);
  - a bare consumer peer: confluent-kafka (librdkafka) in Python reading every message and
    parsing its JSON, computing nothing;

and prints events/s and the ratios.

    python3 bench/kafka_ingest_bench.py [--events 1000000] [--runs 3]

Needs target/release/quiver (cargo build --release), Java 17 and Maven (the broker), and
confluent-kafka in the Python running it (pip install confluent-kafka).
"""
import argparse
import re
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import measured, sh, start_broker, stop_broker  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUIVER = ROOT / "target" / "release" / "quiver"
TOPIC = "bench-transactions"


def events_per_second(summary):
    m = re.search(r"events in [0-9.]+ s \(([0-9,]+) events/s", summary)
    return float(m.group(1).replace(",", "")) if m else float("nan")


def bare_consumer(broker, events):
    """Seconds for a plain librdkafka consumer to read and JSON-parse every message."""
    import json

    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": broker,
            "group.id": f"bench-{time.time()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    parts = consumer.list_topics(TOPIC).topics[TOPIC].partitions
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in parts])
    start = time.perf_counter()
    seen, ended = 0, set()
    while len(ended) < len(parts):
        for m in consumer.consume(10_000, timeout=1.0):
            if m.error():
                ended.add(m.partition())
                continue
            json.loads(m.value())
            seen += 1
    elapsed = time.perf_counter() - start
    consumer.close()
    if seen != events:
        sys.exit(f"the bare consumer read {seen} messages, not {events}")
    return elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not QUIVER.exists():
        sys.exit("build first: cargo build --release")
    out = ROOT / "bench" / "out" / "kafka_ingest"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    broker_dir = out / "broker"
    broker = start_broker(broker_dir)
    try:
        configs = out / "configs"
        shutil.copytree(ROOT / "configs", configs)
        kafka_config = configs / "fraud-kafka.yaml"
        text = kafka_config.read_text()
        text = text.replace("${QUIVER_KAFKA_BOOTSTRAP:-127.0.0.1:9092}", broker)
        text = text.replace("topics: [transactions]", f"topics: [{TOPIC}]")
        kafka_config.write_text(text)
        generator = [
            "--events", str(args.events), "--seed", "7",
            "--from", str(configs / "fraud-demo.yaml"), "--events-per-second", "20",
        ]
        sh([QUIVER, "produce-demo", kafka_config, "--partitions", "4", *generator])
        events_file = out / "events.ndjson"
        sh([QUIVER, "generate", "--out", events_file, *generator])

        kafka_rates, file_rates, bare_s = [], [], []
        for run in range(args.runs):
            _, kafka_rss, summary = measured(
                [QUIVER, "run", kafka_config, "--until-caught-up", "--fresh", "--no-progress",
                 "--output", out / f"kafka-{run}"]
            )
            kafka_rates.append(events_per_second(summary))
            _, file_rss, summary = measured(
                [QUIVER, "run", configs / "fraud-demo.yaml", "--input", events_file, "--fresh",
                 "--no-progress", "--output", out / f"file-{run}"]
            )
            file_rates.append(events_per_second(summary))
            bare_s.append(bare_consumer(broker, args.events))
        kafka = max(kafka_rates)
        files = max(file_rates)
        bare = args.events / min(bare_s)
        print(f"events: {args.events:,} (4 partitions), best of {args.runs}")
        print(f"quiver run from Kafka : {kafka:12,.0f} events/s  (peak RSS {kafka_rss:,.0f} MiB)")
        print(f"quiver run from NDJSON: {files:12,.0f} events/s  (peak RSS {file_rss:,.0f} MiB)")
        print(f"bare consumer + json  : {bare:12,.0f} events/s  (confluent-kafka, no features)")
        print(f"Kafka / NDJSON file   : {kafka / files:.2f}x")
        print(f"Kafka / bare consumer : {kafka / bare:.2f}x")
    finally:
        stop_broker(broker_dir)


if __name__ == "__main__":
    main()
