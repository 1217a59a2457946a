"""Fixtures that run the real `sluice` and `sluice-mock` binaries on free loopback ports.

Every process is started in the test's `tmp_path`, announces its port on one stdout line
(`... listening on http://127.0.0.1:PORT`), and is always stopped at teardown: SIGTERM, wait up to
10 s, then SIGKILL. Binaries come from `SLUICE_BIN` / `SLUICE_MOCK_BIN` (see run.sh).
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
UPSTREAM_API_KEY = "sk-upstream-test"

# Environment that changes what the binaries do; tests must not inherit it from the caller.
_SCRUBBED_PREFIXES = ("SLUICE_", "OPENAI_", "RUST_LOG")


def _binary(var: str) -> str:
    path = os.environ.get(var)
    if not path:
        pytest.exit(f"{var} is not set; run the suite through tests/e2e/run.sh", returncode=2)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.exit(f"{var}={path} does not exist or is not executable; build it first", returncode=2)
    return path


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env["RUST_BACKTRACE"] = "1"
    return env


class Process:
    """A child process that prints `<name> listening on <url>` once it is ready."""

    def __init__(self, name: str, argv: list[str], cwd: Path, log_dir: Path):
        self.name = name
        self.argv = argv
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self._stderr = open(self.stderr_path, "wb")
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.exit_code: int | None = None
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        # Keep draining stdout so the child can never block on a full pipe.
        threading.Thread(target=self._pump, daemon=True).start()
        self.url = self._wait_ready()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def stderr_text(self) -> str:
        # The child writes straight to the file; nothing is buffered on our side.
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def _fail(self, why: str) -> None:
        self.stop()
        pytest.fail(
            f"{self.name} {why}\ncommand: {' '.join(self.argv)}\n"
            f"exit code: {self.proc.returncode}\n--- stderr ---\n{self.stderr_text()}",
            pytrace=False,
        )

    def _wait_ready(self) -> str:
        pattern = re.compile(rf"^{re.escape(self.name)} listening on (http://127\.0\.0\.1:\d+)$")
        try:
            line = self._lines.get(timeout=READY_TIMEOUT_S)
        except queue.Empty:
            self._fail(f"printed no ready line within {READY_TIMEOUT_S} s")
        if line is None:
            self._fail("exited before it was ready")
        match = pattern.match(line)
        if not match:
            self._fail(f"printed an unexpected first stdout line: {line!r}")
        return match.group(1)

    def stop(self) -> int:
        """SIGTERM, wait, SIGKILL after 10 s. Returns the exit code; safe to call twice."""
        if self.exit_code is not None:
            return self.exit_code
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.exit_code = self.proc.returncode
        self._stderr.close()
        return self.exit_code


class MockURL(str):
    """The sluice-mock base URL (no `/v1`), with helpers for its `/_mock/*` control routes."""

    def last_request(self) -> dict[str, Any]:
        r = httpx.get(f"{self}/_mock/last_request", timeout=5)
        assert r.status_code == 200, r.text
        return r.json()

    def request_count(self) -> int:
        r = httpx.get(f"{self}/_mock/stats", timeout=5)
        assert r.status_code == 200, r.text
        return r.json()["requests"]

    def reset(self) -> None:
        r = httpx.post(f"{self}/_mock/reset", timeout=5)
        assert r.status_code == 200, r.text


class Gateway:
    """A running `sluice serve`."""

    def __init__(self, process: Process, db_path: Path, config_path: Path | None):
        self.process = process
        self.url = process.url
        self.db_path = db_path
        self.config_path = config_path

    def stop(self) -> int:
        return self.process.stop()

    def stderr_text(self) -> str:
        return self.process.stderr_text()

    def usage_records(self) -> list[dict[str, Any]]:
        """All rows of `usage_records`; call after `stop()` so the sink has been drained."""
        assert self.process.exit_code is not None, "stop the gateway before reading usage records"
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            con.row_factory = sqlite3.Row
            rows = con.execute("SELECT * FROM usage_records ORDER BY ts_ms, rowid").fetchall()
            return [dict(r) for r in rows]
        finally:
            con.close()


def gateway_config(mock_url: str, db_path: Path) -> dict[str, Any]:
    """The config used by the `gateway` fixture (JSON is valid YAML)."""
    return {
        "server": {"listen": "127.0.0.1:0"},
        "store": {"url": f"sqlite://{db_path}"},
        "providers": [
            {
                "name": "upstream",
                "kind": "openai_compatible",
                "base_url": f"{mock_url}/v1",
                "api_key": UPSTREAM_API_KEY,
            },
            {
                "name": "limited",
                "kind": "openai_compatible",
                "base_url": f"{mock_url}/v1",
                "headers": {"x-mock-status": "429"},
            },
        ],
        "models": [
            {"name": "public-model", "deployments": [{"provider": "upstream", "model": "upstream-model-v2"}]},
            {"name": "limited-model", "deployments": [{"provider": "limited", "model": "m"}]},
            {"name": "embed-model", "deployments": [{"provider": "upstream", "model": "mock-embed"}]},
        ],
    }


PUBLIC_MODELS = {"public-model", "limited-model", "embed-model"}


@pytest.fixture(scope="session")
def sluice_bin() -> str:
    return _binary("SLUICE_BIN")


@pytest.fixture(scope="session")
def sluice_mock_bin() -> str:
    return _binary("SLUICE_MOCK_BIN")


@pytest.fixture
def mock(tmp_path: Path, sluice_mock_bin: str):
    """A `sluice-mock` server; the value is its base URL (a `MockURL`)."""
    workdir = tmp_path / "mock"
    workdir.mkdir()
    process = Process("sluice-mock", [sluice_mock_bin, "--listen", "127.0.0.1:0"], workdir, workdir)
    try:
        yield MockURL(process.url)
    finally:
        process.stop()


@pytest.fixture
def gateway(tmp_path: Path, sluice_bin: str, mock: MockURL):
    """`sluice serve` with `gateway_config()` pointing at the `mock` server."""
    workdir = tmp_path / "gateway"
    workdir.mkdir()
    db_path = workdir / "sluice.db"
    config_path = workdir / "sluice.yaml"
    config_path.write_text(json.dumps(gateway_config(mock, db_path), indent=2))
    process = Process(
        "sluice",
        [sluice_bin, "serve", "--config", str(config_path), "--listen", "127.0.0.1:0"],
        workdir,
        workdir,
    )
    try:
        yield Gateway(process, db_path, config_path)
    finally:
        process.stop()


@pytest.fixture
def zero_config_gateway(tmp_path: Path, sluice_bin: str):
    """`sluice serve` with no config at all, in an empty working directory."""
    workdir = tmp_path / "zero"
    workdir.mkdir()
    process = Process("sluice", [sluice_bin, "serve", "--listen", "127.0.0.1:0"], workdir, tmp_path)
    try:
        yield Gateway(process, workdir / "sluice.db", None)
    finally:
        process.stop()
