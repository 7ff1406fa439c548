"""``/dashboard`` and ``/dashboard/data`` over uvicorn on an engine fed from real Kafka and Redis,
and the page's files shipped inside the package (the worker is pip-installed)."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from stream_app import contract
from stream_app.ops.dashboard import STATIC, Dashboard
from tests.conftest import make_settings
from tests.kafka_helpers import event, produce
from tests.test_ops_http import Fed, Server

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_data_ships_every_static_file() -> None:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = conf["tool"]["setuptools"]["package-data"]["stream_app.ops"]
    files = [p.relative_to(STATIC.parent).as_posix() for p in STATIC.iterdir()]
    assert {"static/dashboard.html", "static/dashboard.js", "static/uPlot.iife.min.js",
            "static/uPlot.min.css", "static/uPlot.LICENSE"} <= set(files)
    assert [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)] == []


def test_the_page_loads_only_vendored_files() -> None:
    page = (STATIC / "dashboard.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/dashboard/static/") or s == "data:," for s in sources)
    for s in sources:
        if s.startswith("/dashboard/static/"):
            assert (STATIC / s.removeprefix("/dashboard/static/")).is_file()
    version = re.search(r"\(v([\d.]+)\)", (STATIC / "uPlot.iife.min.js").read_text()[:200])
    assert version and f"| {version[1]} |" in (STATIC / "VENDORED.md").read_text()


@pytest.fixture()
async def fed(_service_urls: tuple[str, str, bool], tmp_path: Path) -> AsyncIterator[Fed]:
    kafka, redis, embedded = _service_urls
    f = Fed(make_settings(kafka, redis, embedded, tmp_path, partitions=1))
    await f.start()
    yield f
    await f.stop()


@pytest.mark.integration
async def test_the_data_follows_the_engine_and_since_returns_only_newer_samples(fed: Fed) -> None:
    board = Dashboard(fed.view, interval_s=0.0)  # every request samples
    await produce(fed.settings, contract.EVENTS,
                  [(b"d", event(f"d-{i}", "d", x=float(i))) for i in range(30)], partition=0)
    msgs = await fed.fetch(30)
    async with Server(board.routes()) as server:
        page_status, page = await server.get("/dashboard")
        lib_status, lib = await server.get("/dashboard/static/uPlot.iife.min.js")
        before = orjson.loads((await server.get("/dashboard/data"))[1])
        await fed.process(msgs[:20])
        status, body = await server.get(f"/dashboard/data?since={before['rings']['t'][-1]}")
        after = orjson.loads(body)
        bad_since = orjson.loads((await server.get("/dashboard/data?since=soon"))[1])
    assert page_status == 200 and 'id="plot-drift"' in page
    assert lib_status == 200 and lib.startswith("/*! https://github.com/leeoniya/uPlot")
    assert status == 200
    assert before["state"]["events"]["received"] == 0
    assert after["state"]["events"]["received"] == 20
    assert after["state"]["events"]["predicted"] == 20
    assert len(after["rings"]["t"]) == 1  # only the sample after `since`
    series = after["rings"]["series"]
    assert series["events_per_s"][0] > 0
    assert all(series[k][0] > 0 for k in ("p50_ms", "p95_ms", "p99_ms"))
    assert series["p50_ms"][0] <= series["p95_ms"][0] <= series["p99_ms"][0]
    assert after["state"]["version"] == fed.engine.model.version
    assert [v["version"] for v in after["state"]["versions"]] == [fed.engine.model.version]
    assert len(bad_since["rings"]["t"]) == 3  # not a number: every sample
