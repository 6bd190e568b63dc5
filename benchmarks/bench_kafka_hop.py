"""One stage hop through the broker: produce -> consume latency by ``fetch.wait.max.ms``. Prints JSON.

    .venv/bin/python -m benchmarks.bench_kafka_hop [--bootstrap HOST:PORT] [--waits 500,100,25] [--n 30]

Without ``--bootstrap`` it starts the local Tansu broker (the embedded default) on a free port. Records are sent one
at a time, 137 ms apart (never in step with the fetch cycle), by the project's own producer and consumer settings
(rfr/core/kafka.py) with ``linger.ms`` 0, and timed from just before ``produce`` to the consumer's ``poll`` return.
A broker that answers a waiting fetch as soon as data arrives (Kafka) shows no dependence on the wait; one that
holds it for the whole wait (Tansu) adds it to every hop of the pipeline (submissions, frames, faces, embeddings,
matches: five hops a still).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rfr.core.kafka import make_consumer, make_producer  # noqa: E402
from rfr.core.settings import KafkaSettings  # noqa: E402
from rfr.tools import procs  # noqa: E402


def hop_latencies(kafka: KafkaSettings, wait_ms: int, n: int) -> list[float]:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    topic = f"bench-hop-{wait_ms}-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    consumer = make_consumer(kafka, f"bench-hop-{uuid.uuid4().hex[:6]}", **{"fetch.wait.max.ms": wait_ms})
    producer = make_producer(kafka, **{"linger.ms": 0})
    consumer.subscribe([topic])
    try:
        while not consumer.assignment():
            consumer.poll(0.2)
        out = []
        for _ in range(n):
            time.sleep(0.137)
            sent = time.perf_counter()
            producer.produce(topic, b"x")
            producer.poll(0)
            while True:
                msg = consumer.poll(2.0)
                if msg is not None and msg.error() is None:
                    out.append(time.perf_counter() - sent)
                    break
        producer.flush(10)
        return out
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bootstrap", default=None, help="an existing broker; default: start Tansu")
    parser.add_argument("--waits", default="500,100,25", help="fetch.wait.max.ms values (ms)")
    parser.add_argument("--n", type=int, default=30, help="records per value")
    args = parser.parse_args()
    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        port = procs.free_port()
        broker = subprocess.Popen(procs.tansu_argv(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bootstrap = f"127.0.0.1:{port}"
        time.sleep(3)
    try:
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        rows = []
        for wait in (int(v) for v in args.waits.split(",")):
            lat = hop_latencies(kafka, wait, args.n)
            rows.append({"fetch_wait_max_ms": wait, "hop_ms_median": round(statistics.median(lat) * 1000, 1),
                         "hop_ms_max": round(max(lat) * 1000, 1)})
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(10)
    print(json.dumps({"benchmark": "kafka_hop", "broker": "tansu (started here)" if broker else bootstrap,
                      "records_per_value": args.n, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
