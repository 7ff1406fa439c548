"""The peers of ``bench/peers.py``: the same per-event work as stream-app, on Bytewax or on a
plain confluent-kafka loop. Runs in the benchmark's own venv (``bench/.venv-peers``: bytewax
0.21.1, confluent-kafka, redis-py, River, orjson) and never imports ``stream_app``.

Per batch of events (each ``{"event_id", "entity_id", "timestamp", "features", "label"}``):

1. **One** redis-py pipeline (no transaction) per batch: for every entity in the batch,
   ``HINCRBY n``, ``HINCRBYFLOAT s``, ``HINCRBYFLOAT q`` on the hash ``<prefix><entity_id>``
   add the batch's count, sum and sum of squares of ``f0``. The replies are the totals after
   the batch, so the totals before it are the replies minus the batch's own part: the pipeline
   reads and writes in one round trip.
2. Per event, in order: the entity's count, mean and population std of ``f0`` over its
   *earlier* events (0.0 without history, as stream-app's ``f0_{count,mean,std}_by_entity``)
   join the 20 raw features; River ``StandardScaler | LogisticRegression``
   ``predict_proba_one``, then ``learn_one`` with the event's label.
3. One prediction JSON per event, keyed by event_id.

Increments are not idempotent: a redelivered batch would count twice. This benchmark never
restarts a peer, so it does not matter here.

    python -m bytewax.run "bench/peers_worker.py:build_flow()"     # Bytewax, one worker
    python bench/peers_worker.py confluent                         # the plain loop
    python bench/peers_worker.py publish RECORDS.pickle            # the latency mode's load

Configuration comes from ``PEERS_*`` environment variables (set by ``bench/peers.py``):
``PEERS_BROKERS``, ``PEERS_SOURCE``, ``PEERS_SINK``, ``PEERS_REDIS_URL``,
``PEERS_KEY_PREFIX``, ``PEERS_BATCH`` and (confluent) ``PEERS_GROUP``, ``PEERS_WAIT_S``.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import redis
from river import linear_model, preprocessing

FEATURE = "f0"
NAMES = (f"{FEATURE}_count_by_entity", f"{FEATURE}_mean_by_entity", f"{FEATURE}_std_by_entity")


class Scorer:
    """Entity stats in Redis (one pipeline per batch), River predict then learn per event."""

    def __init__(self, redis_url: str, key_prefix: str) -> None:
        self.redis = redis.Redis.from_url(redis_url)
        self.prefix = key_prefix
        self.model = preprocessing.StandardScaler() | linear_model.LogisticRegression()

    def score(self, values: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
        """``(key, prediction JSON)`` for each event of the batch, in order."""
        events = [orjson.loads(v) for v in values]
        part: dict[str, list[float]] = {}  # entity -> [n, sum, sum of squares] of this batch
        for ev in events:
            x = ev["features"].get(FEATURE)
            acc = part.setdefault(ev["entity_id"], [0, 0.0, 0.0])
            if isinstance(x, (int, float)):
                acc[0] += 1
                acc[1] += x
                acc[2] += x * x
        pipe = self.redis.pipeline(transaction=False)
        for entity, (n, s, q) in part.items():
            key = self.prefix + entity
            pipe.hincrby(key, "n", n)
            pipe.hincrbyfloat(key, "s", s)
            pipe.hincrbyfloat(key, "q", q)
        replies = pipe.execute()
        before: dict[str, list[float]] = {}
        for i, (entity, (n, s, q)) in enumerate(part.items()):
            tn, ts, tq = replies[3 * i: 3 * i + 3]
            before[entity] = [int(tn) - n, float(ts) - s, float(tq) - q]
        out = []
        model = self.model
        for ev in events:
            state = before[ev["entity_id"]]
            n, s, q = state
            x_in = dict(ev["features"])
            mean = s / n if n > 0 else 0.0
            std = math.sqrt(max(q / n - mean * mean, 0.0)) if n > 0 else 0.0
            x_in[NAMES[0]], x_in[NAMES[1]], x_in[NAMES[2]] = float(n), mean, std
            score = model.predict_proba_one(x_in).get(True, 0.0)
            model.learn_one(x_in, bool(ev["label"]))
            v = ev["features"].get(FEATURE)
            if isinstance(v, (int, float)):
                state[0] += 1
                state[1] += v
                state[2] += v * v
            out.append((ev["event_id"].encode(), orjson.dumps({
                "event_id": ev["event_id"], "entity_id": ev["entity_id"], "score": score,
                "predicted": score > 0.5, "event_timestamp": ev["timestamp"],
                "scored_at": time.time()})))
        return out


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"peers_worker: {name} is not set")
    return value


def build_flow() -> Any:
    """The Bytewax dataflow: KafkaSource -> flat_map_batch(score) -> KafkaSink."""
    import bytewax.operators as op
    from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
    from bytewax.dataflow import Dataflow

    brokers = _env("PEERS_BROKERS").split(",")
    scorer = Scorer(_env("PEERS_REDIS_URL"), _env("PEERS_KEY_PREFIX"))

    def score_batch(msgs: list[Any]) -> Iterable[Any]:
        return [KafkaSinkMessage(k, v) for k, v in scorer.score([m.value for m in msgs])]

    flow = Dataflow("peers")
    events = op.input("events", flow, KafkaSource(
        brokers, [_env("PEERS_SOURCE")], batch_size=int(os.environ.get("PEERS_BATCH", "1000"))))
    predictions = op.flat_map_batch("score", events, score_batch)
    op.output("predictions", predictions, KafkaSink(brokers, _env("PEERS_SINK")))
    return flow


def run_confluent() -> int:
    """``consume(batch, wait_s)``, one Redis pipeline, produce each prediction; flush, then
    commit the offsets."""
    from confluent_kafka import Consumer, Producer

    brokers, sink = _env("PEERS_BROKERS"), _env("PEERS_SINK")
    batch = int(os.environ.get("PEERS_BATCH", "500"))
    # consume() returns at `batch` records or after `wait_s`: a long wait holds a half-full
    # batch back (0.1 s gave p50 120 ms at 5,000 events/s); Bytewax's source waits 1 ms
    wait_s = float(os.environ.get("PEERS_WAIT_S", "0.005"))
    scorer = Scorer(_env("PEERS_REDIS_URL"), _env("PEERS_KEY_PREFIX"))
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": _env("PEERS_GROUP"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    producer = Producer({"bootstrap.servers": brokers})
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    consumer.subscribe([_env("PEERS_SOURCE")])
    try:
        while not stopping:
            msgs = consumer.consume(batch, wait_s)
            values = []
            for m in msgs:
                if m.error() is not None:
                    raise RuntimeError(f"consume error: {m.error()}")
                values.append(m.value())
            if not values:
                continue
            for key, value in scorer.score(values):
                producer.produce(sink, value, key)
            producer.poll(0)
            producer.flush(30)  # at least once: deliveries before the offsets are committed
            consumer.commit(asynchronous=True)
    finally:
        producer.flush(10)
        consumer.close()
    return 0


def run_publisher(path: str) -> int:
    """The latency mode's load: produce the pickled ``[(due_s, topic, key, value), ...]`` of
    ``path`` (sorted by ``due_s``, seconds after the start) on time, then print a JSON line
    ``{"sent", "first", "last"}`` (epoch seconds of the first and last produce).

    librdkafka costs a few µs per record where aiokafka costs tens, so 5,000 events/s and their
    labels leave on time from a single Python process on the shared cores.
    """
    import pickle

    from confluent_kafka import Producer

    with open(path, "rb") as fh:
        records = pickle.load(fh)
    producer = Producer({"bootstrap.servers": _env("PEERS_BROKERS"), "linger.ms": 1})
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    t0 = time.monotonic()
    first = time.time()
    sent = 0
    for due, topic, key, value in records:
        if stopping:
            break
        wait = t0 + due - time.monotonic()
        if wait > 0.0005:
            time.sleep(wait)
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.01)
        sent += 1
        producer.poll(0)
    last = time.time()
    producer.flush(30)
    print(orjson.dumps({"sent": sent, "first": first, "last": last}).decode(), flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["confluent"]:
        sys.exit(run_confluent())
    if len(sys.argv) == 3 and sys.argv[1] == "publish":
        sys.exit(run_publisher(sys.argv[2]))
    raise SystemExit("usage: peers_worker.py confluent | publish RECORDS.pickle  (Bytewax: "
                     "python -m bytewax.run \"bench/peers_worker.py:build_flow()\")")
