"""Fixtures that start the real binaries, as the Rust harness in tests/src/lib.rs does: `flowork-gateway serve`
on an ephemeral port with a fresh data directory (ready once /readyz answers), an engine registered with
`engine add`, a user token from `token mint`, and Python workers as real processes (tests/worker_app.py).

The binaries come from FLOWORK_BIN_DIR, else $CARGO_TARGET_DIR/debug, else <repository>/target/debug
(`cargo build --workspace --bins` builds them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowork import Client
from flowork._http import verify_option

REPO = Path(__file__).resolve().parents[3]
WORKER_APP = Path(__file__).resolve().parent / "worker_app.py"


def binary(name: str) -> Path:
    if "FLOWORK_BIN_DIR" in os.environ:
        return Path(os.environ["FLOWORK_BIN_DIR"]) / name
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "debug" / name


def eventually(check: Callable[[], Any], what: str, within: float = 30.0) -> Any:
    """Polls ``check`` until it returns something truthy (a liveness bound, not a speed assertion)."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {within} s")
        time.sleep(0.05)


@dataclass
class Gateway:
    base: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path

    def cli(self, *args: str) -> str:
        """Runs a `flowork-gateway` sub-command against this gateway's data directory."""
        out = subprocess.run(
            [str(binary("flowork-gateway")), *args, "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            env={**os.environ, "FLOWORK_LOG_FORMAT": "json"},
            timeout=60,
        )
        if out.returncode != 0:
            raise RuntimeError(f"flowork-gateway {args} failed: {out.stderr}")
        return out.stdout

    def add_engine(self, name: str, owner: str = "alice") -> str:
        return str(json.loads(self.cli("engine", "add", name, "--owner", owner, "--json"))["token"])

    def mint(self, user: str = "alice") -> str:
        return self.cli("token", "mint", "--user", user, "--ttl", "1h").strip()


@contextmanager
def running_gateway(tmp_path: Path, extra: list[str], ca_file: Path | None = None) -> Iterator[Gateway]:
    """`flowork-gateway serve` on 127.0.0.1:0 with `extra` flags, once /readyz answers; HTTPS when `ca_file` (the
    authority that signed its certificate) is given."""
    exe = binary("flowork-gateway")
    if not exe.exists():
        pytest.fail(f"{exe} is missing: run `cargo build --workspace --bins` first")
    data_dir = tmp_path / "data"
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(exe), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "FLOWORK_LOG_FORMAT": "json"},
        )
    try:

        def listening() -> str | None:
            if process.poll() is not None:
                raise RuntimeError(f"the gateway exited: {log.read_text()}")
            for line in log.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("message") == "listening":
                    return str(entry["addr"])
            return None

        base = ("https://" if ca_file else "http://") + eventually(listening, "the gateway to listen")

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=5, verify=verify_option(str(ca_file) if ca_file else None)).is_success
            except httpx.TransportError:
                return False

        eventually(ready, "the gateway to be ready")
        gateway = Gateway(base, data_dir, process, log)
        yield gateway
        # A test may have restarted it.
        process = gateway.process
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    with running_gateway(tmp_path, []) as gateway:
        yield gateway


def make_test_ca(directory: Path) -> Path:
    """A throw-away CA and a certificate for the loopback names it signed, in `directory` (the `test-ca` helper
    of tests/src/bin): `ca.pem`, `tls-cert.pem`, `tls-key.pem`. Returns the CA file."""
    subprocess.run([str(binary("test-ca")), str(directory)], check=True, timeout=60)
    return directory / "ca.pem"


@dataclass
class Setup:
    """A gateway with engine `py` registered to alice, her token, and a client."""

    gateway: Gateway
    engine_token: str
    user_token: str
    client: Client
    tmp: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_worker(
        self, *, lease_ms: int = 1500, concurrency: int = 4, grace: float = 30.0, ca_file: Path | None = None
    ) -> WorkerProcess:
        """Starts tests/worker_app.py as its own process (so it can be killed or stopped by a signal)."""
        log = self.tmp / f"worker-{len(self.workers)}.log"
        env = {
            **os.environ,
            "FLOWORK_GATEWAY": self.gateway.base,
            "FLOWORK_ENGINE_ID": "py",
            "FLOWORK_ENGINE_TOKEN": self.engine_token,
            "FLOWORK_LEASE_MS": str(lease_ms),
            "FLOWORK_CONCURRENCY": str(concurrency),
            "FLOWORK_GRACE": str(grace),
            "MARKER_DIR": str(self.tmp),
        }
        if ca_file is not None:
            env["FLOWORK_CA_FILE"] = str(ca_file)
        with open(log, "wb") as out:
            process = subprocess.Popen([sys.executable, str(WORKER_APP)], stdout=out, stderr=subprocess.STDOUT, env=env)
        worker = WorkerProcess(process, log)
        self.workers.append(worker)
        return worker

    def job(self, job_id: str) -> dict[str, Any]:
        return self.client.get(job_id)


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait_exit(self, within: float = 60.0) -> int:
        return self.process.wait(timeout=within)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def setup(gateway: Gateway, tmp_path: Path) -> Iterator[Setup]:
    engine_token = gateway.add_engine("py")
    user_token = gateway.mint("alice")
    client = Client(gateway.base, token=user_token, retry_deadline=20.0)
    s = Setup(gateway, engine_token, user_token, client, tmp_path)
    try:
        yield s
    finally:
        client.close()
        for worker in s.workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
