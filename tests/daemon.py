"""Run `anomalyd run` as a real subprocess for integration tests, with bounded waits."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .kafka_broker import free_port
from .kafka_helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]

# A small, fast model: these tests check delivery, not detection quality.
FAST_MODEL: dict[str, Any] = {
    "window": {"length": 16},
    "model": {"hidden_size": 8, "device": "cpu", "threads": 1},
    "training": {"warmup_events": 200, "epochs": 5},
    "alerts": {"cooldown_events": 16},
}


def service_config(bootstrap: str, topic: str, group: str, **sections: Any) -> dict[str, Any]:
    """A daemon config on the test broker, with the fast consumer timings of BROKER.md."""
    config: dict[str, Any] = {
        **FAST_MODEL,
        "source": {
            "type": "kafka",
            "kafka": {
                "topics": [topic],
                "group_id": group,
                "session_timeout_ms": 2000,
                "heartbeat_interval_ms": 500,
                "max_poll_interval_ms": 30000,
                "fetch_max_wait_ms": 100,
                "auto_offset_reset": "earliest",
            },
        },
        "kafka": {"bootstrap_servers": [bootstrap], "request_timeout_ms": 5000},
        "service": {"commit_interval_s": 0.5, "shutdown_deadline_s": 20, "metrics": {"port": free_port()}},
        "logging": {"format": "json", "level": "info"},
    }
    for name, value in sections.items():
        config[name] = {**config.get(name, {}), **value} if isinstance(value, dict) else value
    return config


class Daemon:
    """One `anomalyd run` process; stderr (JSON logs) goes to a file read by the helpers."""

    def __init__(self, config: dict[str, Any], workdir: Path, name: str = "daemon"):
        self.config = config
        self.workdir = workdir
        self.name = name
        self.config_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        self.port = int(config["service"]["metrics"]["port"])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> Daemon:
        self.config_path.write_text(yaml.safe_dump(self.config))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "anomalyd.cli", "run", "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
        log.close()
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str) -> float:
        status, text = self.get("/metrics")
        if status != 200:
            return float("nan")
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else float("nan")

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        self._wait(lambda: self.get("/readyz")[0] == 200, timeout_s, "ready")

    def wait_events(self, n: int, timeout_s: float = 60.0) -> None:
        self._wait(lambda: self.metric("anomalyd_events_total") >= n, timeout_s, f"{n} events")

    def _wait(self, predicate: Any, timeout_s: float, what: str) -> None:
        def check() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            return bool(predicate())

        try:
            wait_until(check, timeout_s, interval_s=0.1, message=f"{self.name} {what}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; the return code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise AssertionError(f"{self.name} did not stop in {timeout_s} s:\n{self.log_tail()}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The daemon's JSON log lines (optionally only those with event ``name``)."""
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict) and (name is None or item.get("event") == name):
                lines.append(item)
        return lines

    def log_tail(self, n: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
