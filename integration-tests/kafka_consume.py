"""Reads a Kafka topic from the beginning and writes one JSON line per message
(alert_id and kind headers, key, value) to OUT, flushed per line, until
--count distinct alert ids were read, --idle seconds pass without a message,
or --max seconds pass. Runs inside the namespace the broker is in.

    python3 kafka_consume.py BOOTSTRAP TOPIC OUT [--count N] [--idle S] [--max S]
"""

import argparse
import json
import signal
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("topic")
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--idle", type=float, default=0)
    ap.add_argument("--max", type=float, default=120)
    a = ap.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": f"gwt-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "log_level": 3,
    })
    c.subscribe([a.topic])
    ids = set()
    start = last = time.monotonic()
    with open(a.out, "a") as out:
        while not stop:
            now = time.monotonic()
            if now - start > a.max or (a.count and len(ids) >= a.count):
                break
            if a.idle and ids and now - last > a.idle:
                break
            msg = c.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    print(f"consumer: {msg.error()}", file=sys.stderr, flush=True)
                continue
            last = time.monotonic()
            headers = {k: (v or b"").decode() for k, v in (msg.headers() or [])}
            ids.add(headers.get("alert_id"))
            out.write(json.dumps({
                "alert_id": headers.get("alert_id"),
                "kind": headers.get("kind"),
                "key": (msg.key() or b"").decode(),
                "partition": msg.partition(),
                "offset": msg.offset(),
                "value": msg.value().decode(errors="replace"),
            }) + "\n")
            out.flush()
    c.close()


if __name__ == "__main__":
    main()
