"""A real worker serving the dashboard, real events through Kafka, and a real headless browser.

Used by ``tests/test_dashboard_browser.py``, and run by hand to refresh the README's picture:

    python -m tests.dashboard_browser docs/dashboard.png   # with STREAM_KAFKA_URL / STREAM_REDIS_URL

The worker is ``stream-app worker`` itself, whose HTTP server mounts ``app.ops.routes()`` (the
dashboard's included) on ``http_port``; events and labels come from ``stream-app replay
synthetic``; the browser is
Debian's ``chromium``, driven by Playwright with ``executable_path`` (no browser download).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any

import aiohttp

from stream_app.http.auth import new_key
from stream_app.settings import Settings, load_settings
from stream_app.tools import services as svc

ROOT = Path(__file__).resolve().parents[1]
#: every plot of the page, by element id
PLOTS = ("plot-throughput", "plot-latency", "plot-quality", "plot-coverage", "plot-drift",
         "plot-scores", "plot-model")


def chromium() -> str | None:
    """Debian's chromium, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def http(port: int) -> dict[str, Any]:
    """Settings of a worker whose HTTP server (and so the dashboard) listens on ``port``."""
    _, entry = new_key("dashboard")
    return {"http_enabled": True, "http_port": port, "api_keys": (entry,)}


def start_worker(settings: Settings, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """``stream-app worker`` (``settings.http_port`` serves the dashboard)."""
    return svc.start_worker(settings, log)


def start_replay(settings: Settings, log: IO[bytes], *, rate: float, limit: int,
                 extra: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """``stream-app replay synthetic`` with labels half a second behind their events."""
    return subprocess.Popen([sys.executable, "-m", "stream_app", "replay", "synthetic",
                             "--rate", str(rate), "--limit", str(limit), "--label-delay", "0.5",
                             *extra], env=svc.worker_env(settings), stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT)


async def get(port: int, path: str) -> tuple[int, str]:
    """One GET on the worker; 0 and the error when it does not answer (yet)."""
    try:
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status, await r.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0, repr(exc)


async def until(check: Callable[[], Awaitable[Any]], timeout_s: float) -> Any:
    """Poll an async ``check`` until it returns something true, at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = await check()
        if got or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.2)


async def ready(port: int, timeout_s: float = 90) -> bool:
    async def check() -> bool:
        return (await get(port, "/readyz"))[0] == 200

    return bool(await until(check, timeout_s))


async def launch(playwright: Any, executable: str) -> Any:
    """Headless chromium (``--no-sandbox``: CI runs as root)."""
    return await playwright.chromium.launch(executable_path=executable, headless=True,
                                            args=["--no-sandbox", "--disable-gpu"])


def plot_sizes_js() -> str:
    """A page function: ``[width, height]`` of each plot's canvas (None without one)."""
    return ("ids => ids.map(id => { const c = document.querySelector('#' + id + ' canvas');"
            " return c ? [c.clientWidth, c.clientHeight] : null; })")


async def screenshot(out: Path, seconds: float = 110.0) -> None:
    """``seconds`` of a drifting synthetic stream (110 s: the drift starts after 60), then a
    picture of the page."""
    from playwright.async_api import async_playwright

    executable = chromium()
    assert executable, "install Debian's chromium first"
    work = Path(tempfile.mkdtemp(prefix="dashboard-"))
    tag = uuid.uuid4().hex[:8]
    port = svc.free_port()
    settings = load_settings(
        topic_prefix=f"shot{tag}.", app_id=f"shot-{tag}", web_enabled=False, partitions=2,
        data_dir=str(work), registry_url=f"file://{work}/registry",
        registry_key="screenshot-registry-key-0123456789",
        drift={"window": 500, "check_every": 100}, **http(port))
    with (work / "worker.log").open("wb") as wlog, (work / "replay.log").open("wb") as rlog:
        worker = start_worker(settings, wlog)
        replay = None
        try:
            assert await ready(port), (work / "worker.log").read_text()[-2000:]
            replay = start_replay(settings, rlog, rate=150, limit=18_000,
                                  extra=["--drift-at", "9000", "--shift", "f1=2"])
            async with async_playwright() as pw:
                browser = await launch(pw, executable)
                page = await browser.new_page(viewport={"width": 1500, "height": 1000})
                await page.goto(f"http://127.0.0.1:{port}/dashboard")
                await asyncio.sleep(seconds)  # a picture of a stream, not a synchronisation
                await page.screenshot(path=str(out), full_page=True)
                await browser.close()
        finally:
            if replay is not None:
                svc.stop_process(replay)
            svc.stop_process(worker)
    print(f"wrote {out} (logs in {work})")


if __name__ == "__main__":
    asyncio.run(screenshot(Path(sys.argv[1]), *map(float, sys.argv[2:3])))
