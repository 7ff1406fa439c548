"""The replay datasets: pure, deterministic, and a bad JSONL line never loses what follows."""

from __future__ import annotations

import gzip
import itertools
import math
from dataclasses import replace

import orjson
import pytest

from stream_app.contract import EVENT_FIELDS
from stream_app.errors import ConfigError
from stream_app.tools.datasets import (
    BadLine,
    Concept,
    LabelledEvent,
    jsonl,
    open_dataset,
    phishing,
    synthetic,
)


def events_of(items):
    return [item for item in items if isinstance(item, LabelledEvent)]


# -- phishing -------------------------------------------------------------------------


def test_phishing_has_1250_well_formed_rows():
    rows = list(phishing())
    assert len(rows) == 1250
    assert rows[0].event["event_id"] == "phishing-00000"
    assert rows[-1].event["event_id"] == "phishing-01249"
    assert len({r.event["event_id"] for r in rows}) == 1250
    for r in rows:
        assert tuple(r.event) == EVENT_FIELDS
        assert isinstance(r.label, bool)
        assert len(r.event["features"]) == 9
        assert all(isinstance(v, (int, float)) for v in r.event["features"].values())
    assert {r.event["entity_id"] for r in rows} <= {f"site-{k}" for k in range(50)}
    assert len({r.event["entity_id"] for r in rows}) == 50


def test_phishing_is_deterministic_with_increasing_timestamps():
    a = [r.event for r in phishing(start=100.0, step_s=0.5)]
    b = [r.event for r in phishing(start=100.0, step_s=0.5)]
    assert a == b
    assert [e["timestamp"] for e in a[:3]] == [100.0, 100.5, 101.0]
    assert all(x["timestamp"] < y["timestamp"] for x, y in itertools.pairwise(a))


# -- synthetic ------------------------------------------------------------------------


def test_synthetic_is_deterministic_for_a_seed():
    a = [(e.event, e.label) for e in synthetic(seed=5, n=300)]
    b = [(e.event, e.label) for e in synthetic(seed=5, n=300)]
    c = [(e.event, e.label) for e in synthetic(seed=6, n=300)]
    assert a == b
    assert a != c
    assert len(a) == 300


def test_synthetic_shorter_stream_is_a_prefix():
    long = [e.event for e in synthetic(seed=1, n=2500)]
    short = [e.event for e in synthetic(seed=1, n=1030)]
    assert long[:1030] == short


def test_synthetic_event_shape_and_label_balance():
    items = list(synthetic(seed=3, n=5000, n_features=3))
    first = items[0].event
    assert tuple(first) == EVENT_FIELDS
    assert sorted(first["features"]) == ["channel", "f0", "f1", "f2"]
    assert first["features"]["channel"] in Concept.default().categories
    assert all(isinstance(e.label, bool) for e in items)
    positive = sum(e.label for e in items) / len(items)
    assert 0.15 < positive < 0.6
    entities = [e.event["entity_id"] for e in items]
    top = max(set(entities), key=entities.count)
    assert top == "user-0000"  # Zipf-ish: the first entity is the most frequent
    assert len({e.event["event_id"] for e in items}) == 5000


def test_synthetic_features_are_correlated():
    xs = [e.event["features"] for e in synthetic(seed=9, n=4000)]
    f0 = [x["f0"] for x in xs]
    f1 = [x["f1"] for x in xs]
    m0, m1 = sum(f0) / len(f0), sum(f1) / len(f1)
    cov = sum((a - m0) * (b - m1) for a, b in zip(f0, f1, strict=True)) / len(f0)
    var0 = sum((a - m0) ** 2 for a in f0) / len(f0)
    var1 = sum((b - m1) ** 2 for b in f1) / len(f1)
    assert 0.4 < cov / math.sqrt(var0 * var1) < 0.6


def test_synthetic_endless_when_n_is_none():
    assert len(list(itertools.islice(synthetic(seed=2, n=None), 3000))) == 3000


def test_synthetic_schedule_is_the_seam_for_drift():
    base = Concept.default()
    certain = replace(base, bias=50.0)
    items = list(synthetic(seed=4, n=2000, schedule=lambda i: base if i < 1500 else certain))
    plain = list(synthetic(seed=4, n=1500))
    assert [e.event for e in items[:1500]] == [e.event for e in plain]
    assert all(e.label for e in items[1500:])


# -- jsonl ----------------------------------------------------------------------------

LINES = [
    b'{"event_id": "e1", "entity_id": "a", "timestamp": 1.0, "features": {"x": 1}, "label": true}',
    b'{"event_id": "e2", "entity_id": "b", "timestamp": 2.0, "features": {"x": 2}}',
    b"{not json",
    b"[1, 2, 3]",
    b"   ",
    b'{"event_id": "e6", "features": "not a dict"}',
    b"\xff\xfe{}",
    b'{"event_id": "e8", "entity_id": "a", "timestamp": 8.0, "features": {"x": NaN}, "label": "fraud"}',
    b'{"event_id": "e9", "entity_id": "c", "timestamp": 9.0, "features": {}, "label": 0}',
]


@pytest.fixture
def jsonl_file(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(LINES) + b"\n")
    return path


def test_jsonl_reports_bad_lines_with_numbers_and_loses_nothing_after(jsonl_file):
    items = list(jsonl(jsonl_file))
    bad = [i for i in items if isinstance(i, BadLine)]
    assert [(b.lineno, str(b).split(" (")[0]) for b in bad] == [
        (3, "line 3: invalid JSON"),
        (4, "line 4: not a JSON object"),
        (7, "line 7: not UTF-8"),
    ]
    assert bad[0].raw == "{not json"
    events = events_of(items)
    assert [e.event["event_id"] for e in events] == ["e1", "e2", "e6", "e8", "e9"]
    assert [e.label for e in events] == [True, None, None, "fraud", 0]
    # items come in file order, bad lines in their place
    assert [getattr(i, "lineno", None) or i.event["event_id"] for i in items] == [
        "e1", "e2", 3, 4, "e6", 7, "e8", "e9"]


def test_jsonl_label_is_removed_and_contract_violations_kept(jsonl_file):
    e1, e2, e6, e8, _ = events_of(jsonl(jsonl_file))
    assert "label" not in e1.event
    assert orjson.loads(e1.payload) == e1.event
    assert e2.payload == LINES[1]  # published exactly as written
    assert e6.event == {"event_id": "e6", "features": "not a dict"}
    assert b"NaN" in e8.payload and b"label" not in e8.payload


def test_jsonl_gzip(tmp_path):
    path = tmp_path / "events.jsonl.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"\n".join(LINES))
    assert len(events_of(jsonl(path))) == 5


# -- open_dataset ---------------------------------------------------------------------


def test_open_dataset_dispatch_and_limit(jsonl_file):
    assert len(list(open_dataset("phishing", limit=10))) == 10
    assert len(list(open_dataset("synthetic", seed=1, limit=7))) == 7
    assert len(list(open_dataset("synthetic", seed=1))) == 10_000
    items = list(open_dataset(jsonl_file, limit=3))  # the limit counts events, not bad lines
    assert [getattr(i, "lineno", None) or i.event["event_id"] for i in items] == [
        "e1", "e2", 3, 4, "e6"]
    assert list(open_dataset("phishing", limit=0)) == []


def test_open_dataset_timestamps_are_configurable():
    items = list(open_dataset("synthetic", seed=1, limit=3, start=10.0, step_s=0.25))
    assert [i.event["timestamp"] for i in items] == [10.0, 10.25, 10.5]


@pytest.mark.parametrize("name", ["nope", "missing/file.jsonl"])
def test_open_dataset_unknown_is_a_config_error(name):
    with pytest.raises(ConfigError, match="expected 'phishing', 'synthetic' or the path"):
        open_dataset(name)


def test_open_dataset_rejects_a_directory_and_a_negative_limit(tmp_path):
    with pytest.raises(ConfigError, match="not a regular file"):
        open_dataset(tmp_path)
    with pytest.raises(ConfigError, match="limit"):
        open_dataset("phishing", limit=-1)
