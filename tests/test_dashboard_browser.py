"""The live dashboard in a real headless browser, on ``stream-app worker`` fed through real Kafka
and Redis (its HTTP server mounts ``app.ops.routes()``, the dashboard's included).

The page loads, every plot draws a canvas of nonzero size, the numbers and the series grow
while ``stream-app replay`` sends events and labels, and the browser console stays empty (no
error, no warning, no uncaught exception). Skipped without Debian's chromium, except in CI,
which installs it (``.ci/run``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_app.kafka_io import ensure_topics
from stream_app.tools import services as svc
from tests import dashboard_browser as db
from tests.conftest import IN_CI, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_EVENTS = "Number(document.getElementById('tile-events').textContent.replace(/,/g, ''))"


@pytest.fixture()
def chromium() -> str:
    executable = db.chromium()
    if executable is None:
        if IN_CI:
            pytest.fail("CI must install Debian's chromium (.ci/run)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); CI has it")
    return executable


async def test_the_dashboard_draws_every_plot_and_moves_as_events_flow(
        _service_urls: tuple[str, str, bool], tmp_path: Path, chromium: str) -> None:
    from playwright.async_api import async_playwright

    kafka, redis, embedded = _service_urls
    port = svc.free_port()
    settings = make_settings(kafka, redis, embedded, tmp_path, partitions=2,
                             drift={"window": 50, "check_every": 25}, **db.http(port))
    await ensure_topics(settings)
    wlog, rlog = (tmp_path / "worker.log").open("wb"), (tmp_path / "replay.log").open("wb")
    worker = db.start_worker(settings, wlog)
    replay = None
    console: list[tuple[str, str]] = []
    try:
        assert await db.ready(port), (tmp_path / "worker.log").read_text()[-3000:]
        replay = db.start_replay(settings, rlog, rate=100, limit=20_000)
        async with async_playwright() as pw:
            browser = await db.launch(pw, chromium)
            page = await browser.new_page(viewport={"width": 1400, "height": 1600})
            page.on("console", lambda m: console.append((m.type, m.text)))
            page.on("pageerror", lambda e: console.append(("pageerror", str(e))))
            response = await page.goto(f"http://127.0.0.1:{port}/dashboard")
            assert response is not None and response.status == 200
            # bounded waits on conditions (Playwright raises past its timeout)
            await page.wait_for_function(f"{_EVENTS} > 0", timeout=60_000)
            first = await _reading(page)
            await page.wait_for_function(
                f"{_EVENTS} > {first['events']} && Number(document.body.dataset.points) > "
                f"{first['points']}", timeout=60_000)
            await page.wait_for_function(  # labels joined, and a drift subject tested
                "Object.keys(window.dashboard.store.series).some(k => k.startsWith('p:'))"
                " && window.dashboard.store.series['accuracy'] !== undefined", timeout=60_000)
            second = await _reading(page)
            sizes = await page.evaluate(db.plot_sizes_js(), list(db.PLOTS))
            drift_series = await page.evaluate("window.dashboard.charts['plot-drift'].series.length")
            await browser.close()
        code, body = await db.get(port, "/dashboard/data")
    finally:
        if replay is not None:
            svc.stop_process(replay)
        exit_code = svc.stop_process(worker)
        wlog.close()
        rlog.close()
    worker_log = (tmp_path / "worker.log").read_text()[-3000:]
    assert dict(zip(db.PLOTS, sizes, strict=True)) == {
        p: s for p, s in zip(db.PLOTS, sizes, strict=True) if s and s[0] > 0 and s[1] > 0}
    assert second["events"] > first["events"] and second["points"] > first["points"]
    assert drift_series >= 2  # the time axis and at least one subject
    assert console == [], console
    assert code == 200, body
    state = orjson.loads(body)["state"]
    assert state["events"]["received"] >= second["events"]
    assert state["drift"]["subjects"] and state["rolling"]["n"] > 0
    assert exit_code == 0, worker_log


async def _reading(page: Any) -> dict[str, int]:
    return {"events": await page.evaluate(_EVENTS),
            "points": await page.evaluate("Number(document.body.dataset.points)")}
