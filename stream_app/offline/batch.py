"""Batch prediction: score a file of events with a registered model, streaming.

``stream-app predict-batch --input FILE(.jsonl|.parquet) --output FILE [--model NAME@VERSION]
[--to-redis]``. Rows are read in chunks (JSONL lines; Parquet record batches), so memory stays
flat whatever the file's size. Each row goes through the stream's stages: the event contract
(``validate.parse_event``: a Parquet row is the same JSON object, one column per field, a
``features`` column or, without one, every other column as a feature), the input schema
(``pipeline.schema``), ``pipeline.featurize`` and the model's score. Aggregates, if the
feature spec declares any, are folded over the file's own earlier events of each entity (in
file order), as the rebuild does (``offline.rebuild``): the online store is never read or
written. A row that fails is written to the rejects file (``OUTPUT.rejects.jsonl``) with its row
number (1-based), reason and error; nothing else stops the run.

Linear pipelines are scored a chunk at a time (``offline.vector``); others row by row with
``predict_proba_one``. The model is loaded from the registry and never learns; nothing is
written to the registry. The output is written under a temporary name and renamed at the end.
``--to-redis`` also keeps each entity's newest prediction in Redis,
``stream:{namespace}:prediction:{entity_id}``, for ``label_horizon_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from features.spec import compile_spec
from models.online import ModelOutputError, OnlineModel
from stream_app.errors import ConfigError
from stream_app.offline.vector import LinearScorer
from stream_app.pipeline.featurize import Featurizer
from stream_app.pipeline.schema import Schema
from stream_app.settings import Settings
from stream_app.validate import Event, Limits, Rejection, parse_event

__all__ = ["BatchReport", "OUTPUT_SCHEMA", "predict_file", "read_rows"]

CHUNK = 16_384

OUTPUT_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("entity_id", pa.string()), ("model", pa.string()),
    ("model_version", pa.string()), ("model_snapshot", pa.int64()), ("score", pa.float64()),
    ("predicted", pa.bool_()), ("event_timestamp", pa.float64()),
])


@dataclass
class BatchReport:
    rows: int = 0
    predicted: int = 0
    rejected: int = 0
    elapsed_s: float = 0.0
    vectorised: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "predicted": self.predicted, "rejected": self.rejected,
                "elapsed_s": round(self.elapsed_s, 3), "vectorised": self.vectorised,
                "rows_per_s": round(self.rows / self.elapsed_s) if self.elapsed_s else None}


def read_rows(path: Path) -> Iterator[tuple[list[bytes], int]]:
    """Chunks of raw rows (JSON bytes, one per event) and the bytes of input they cover."""
    if path.suffix == ".parquet":
        pf = pq.ParquetFile(path)
        per_row = max(1, pf.metadata.serialized_size) if pf.metadata.num_rows == 0 else \
            path.stat().st_size / pf.metadata.num_rows
        for batch in pf.iter_batches(batch_size=CHUNK):
            names = batch.schema.names
            rows = batch.to_pylist()
            if "features" not in names:
                base = {"event_id", "entity_id", "timestamp"}
                rows = [{k: r[k] for k in base if k in r}
                        | {"features": {k: v for k, v in r.items() if k not in base}}
                        for r in rows]
            yield [orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY) for r in rows], \
                round(per_row * len(rows))
        return
    with path.open("rb") as f:
        while True:
            lines = f.readlines(CHUNK * 200)  # about CHUNK lines of 200 bytes
            if not lines:
                return
            yield lines, sum(map(len, lines))


def predict_file(settings: Settings, model: OnlineModel, snapshot_id: int, src: Path,
                 dst: Path, *, on_progress: Callable[[int, int], None] | None = None,
                 to_redis: Any = None) -> BatchReport:
    """Score ``src`` into ``dst`` (``.parquet`` or ``.jsonl``) and ``dst.rejects.jsonl``."""
    if src.suffix not in (".jsonl", ".parquet") or dst.suffix not in (".jsonl", ".parquet"):
        raise ConfigError("predict-batch reads and writes .jsonl or .parquet files")
    if not src.is_file():
        raise ConfigError(f"no such input file: {src}")
    limits = Limits(settings.max_payload_bytes, settings.max_abs_value)
    schema = Schema(settings.features, one_hot=settings.model.one_hot_strings)
    featurizer = Featurizer(compile_spec(settings.features),
                            one_hot=settings.model.one_hot_strings)
    scorer = LinearScorer.of(model)
    threshold = settings.model.threshold
    report = BatchReport(vectorised=scorer is not None)
    states: dict[str, Any] = {}
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp, rejects_path = dst.with_name(f".{dst.name}.tmp"), dst.with_name(dst.name + ".rejects.jsonl")
    writer = _Writer(tmp, dst.suffix)
    t0 = time.perf_counter()
    parse, check = parse_event, schema.check
    with rejects_path.open("wb") as rejects:
        for chunk, nbytes in read_rows(src):
            events: list[Event] = []
            nums: list[int] = []
            for raw in chunk:
                report.rows += 1
                ev = parse(raw, limits)  # JSON allows the line's trailing newline
                if not isinstance(ev, Rejection):
                    ev = check(ev.features) or ev
                if isinstance(ev, Rejection):
                    rejects.write(_reject(report.rows, ev.reason, ev.error, raw))
                    report.rejected += 1
                    continue
                events.append(ev)
                nums.append(report.rows)
            xs = featurizer.inputs([(e.entity_id, e.timestamp, e.features) for e in events],
                                   states)
            if scorer is not None:
                arr = scorer.scores(xs)
                ok = np.isfinite(arr)
                scores = [float(v) if f else None for v, f in zip(arr.tolist(), ok.tolist(),
                                                                  strict=True)] \
                    if not ok.all() else arr.tolist()
            else:
                scores = [_score(model, x) for x in xs]
            keep = [i for i, v in enumerate(scores) if v is not None]
            if len(keep) < len(scores):
                for i in sorted(set(range(len(scores))) - set(keep)):
                    rejects.write(_reject(nums[i], "model_output", "the score is not finite",
                                          orjson.dumps(events[i].features)))
                    report.rejected += 1
                events = [events[i] for i in keep]
                scores = [scores[i] for i in keep]
            n = len(events)
            cols = {"event_id": [e.event_id for e in events],
                    "entity_id": [e.entity_id for e in events],
                    "model": [model.name] * n, "model_version": [model.version] * n,
                    "model_snapshot": [snapshot_id] * n, "score": scores,
                    "predicted": [v > threshold for v in scores],  # models.metrics.decide
                    "event_timestamp": [e.timestamp for e in events]}
            writer.write(pa.table(cols, schema=OUTPUT_SCHEMA))
            if to_redis is not None:
                to_redis(cols)
            report.predicted += n
            if on_progress is not None:
                on_progress(len(chunk), nbytes)
    writer.close()
    tmp.replace(dst)
    report.elapsed_s = time.perf_counter() - t0
    return report


def _reject(row: int, reason: str, error: str, raw: bytes) -> bytes:
    return orjson.dumps({"row": row, "reason": reason, "error": error,
                         "payload": raw.decode(errors="replace").rstrip("\r\n")[:4096]}) + b"\n"


async def load_model(settings: Settings, ref: str | None) -> tuple[OnlineModel, int]:
    """``NAME@VERSION`` (or ``NAME``: its production version; default: the configured model's)
    from the registry: the newest snapshot that verifies, or ``NAME@VERSION#SNAPSHOT`` that
    one (the ``model_snapshot`` of a stream prediction), and its id."""
    from models.registry import open_registry
    from models.spec import ModelSettings, StepSettings, build_model

    ref, _, sid = (ref or settings.model.name).partition("#")
    name, _, version = ref.partition("@")
    if sid and not (sid.isdigit() and version):
        raise ConfigError(f"--model {ref}#{sid}: expected NAME@VERSION#SNAPSHOT")
    reg = open_registry(settings.registry_url, key=settings.registry_key_bytes,
                        namespace=settings.app_id)
    try:
        info = await (reg.get_version(name, version) if version else reg.production(name))
        state, snap = await reg.load_snapshot(name, info.version, int(sid) if sid else None)
    finally:
        await reg.aclose()
    steps = tuple(StepSettings(**st) for st in info.spec.get("steps", ()))
    model = build_model(ModelSettings(**{**settings.model.model_dump(), "name": name,
                                         "steps": steps}))
    model.pipeline, model.version = state["pipeline"], info.version
    return model, snap.snapshot_id


def redis_writer(settings: Settings) -> Any:
    """``--to-redis``: each chunk's predictions, one pipeline round trip, newest per entity."""
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    prefix = f"stream:{settings.feature_store_namespace}:prediction:"
    ttl = settings.label_horizon_s

    def write(cols: dict[str, list[Any]]) -> None:
        pipe = client.pipeline(transaction=False)
        newest: dict[str, int] = {}
        for i, entity in enumerate(cols["entity_id"]):
            newest[entity] = i
        for entity, i in newest.items():
            pipe.set(prefix + entity, orjson.dumps({k: v[i] for k, v in cols.items()}), ex=ttl)
        pipe.execute()

    return write


def _score(model: OnlineModel, x: dict[str, float]) -> float | None:
    try:
        return model.predict_proba_one(x)
    except ModelOutputError:
        return None


class _Writer:
    def __init__(self, path: Path, suffix: str) -> None:
        self._parquet = pq.ParquetWriter(path, OUTPUT_SCHEMA, compression="zstd") \
            if suffix == ".parquet" else None
        self._file = None if self._parquet is not None else path.open("wb")

    def write(self, table: pa.Table) -> None:
        if self._parquet is not None:
            self._parquet.write_table(table)
        elif self._file is not None:
            self._file.writelines(orjson.dumps(r) + b"\n" for r in table.to_pylist())

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._file is not None:
            self._file.close()
