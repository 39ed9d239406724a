"""`anomalyd run`: the long-running service around the same loop as `replay`.

Signals only set a flag: the loop finishes its batch, flushes, commits and closes. The
first SIGTERM/SIGINT also arms ``service.shutdown_deadline_s``, after which the process
exits regardless; a second signal exits at once.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from anomalyd import __version__
from anomalyd.app import Runner, RunStats, find_snapshot, open_outputs
from anomalyd.config import Config
from anomalyd.errors import ConfigError
from anomalyd.logs import get_logger
from anomalyd.metrics import HealthServer, Metrics
from anomalyd.pipeline import BatchResult, Pipeline
from anomalyd.sinks.kafka import KafkaSink
from anomalyd.sources.base import Source
from anomalyd.sources.file import FileSource
from anomalyd.sources.kafka import KafkaSource, Partition

log = get_logger("anomalyd")


class StopFlag:
    """Set by SIGTERM/SIGINT; calling it tells whether a stop was requested."""

    def __init__(self, deadline_s: float):
        self.deadline_s = deadline_s
        self._event = threading.Event()

    def __call__(self) -> bool:
        return self._event.is_set()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def request(self, reason: str) -> None:
        if self._event.is_set():
            return
        self._event.set()
        log.info("stopping", reason=reason, deadline_s=self.deadline_s)
        timer = threading.Timer(self.deadline_s, self._overdue)
        timer.daemon = True
        timer.start()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._event.is_set():
            log.warning("stopped_at_once", signal=name)
            os._exit(128 + signum)
        self.request(name)

    def _overdue(self) -> None:
        log.error("shutdown_deadline_exceeded", deadline_s=self.deadline_s)
        os._exit(1)


def build_source(config: Config, stop: StopFlag) -> Source:
    if config.source.type == "kafka":
        assert config.source.kafka is not None
        return KafkaSource(
            config.source.kafka,
            config.kafka,
            config.input,
            should_stop=stop,
            retry_backoff_s=config.service.retry_backoff_s,
            retry_backoff_max_s=config.service.retry_backoff_max_s,
        )
    if not config.source.paths:
        raise ConfigError(
            "config error at source.paths: a file source needs at least one path (or use type: kafka)"
        )
    return FileSource(config.source.paths, config.input)


class _Gauges:
    """Refreshes lag, key count and readiness at most once a second (an observer)."""

    def __init__(self, metrics: Metrics, source: Source, pipeline: Pipeline, ready: object):
        self.metrics, self.source, self.pipeline, self.ready = metrics, source, pipeline, ready
        self._next = 0.0
        self.progressed_at = time.monotonic()

    def alive(self, timeout_s: float) -> bool:
        """The loop went through a batch within ``timeout_s`` (a wedged one does not)."""
        return time.monotonic() - self.progressed_at < timeout_s

    def __call__(self, result: BatchResult) -> None:
        now = self.progressed_at = time.monotonic()  # every batch, empty polls too
        if now < self._next:
            return
        self._next = now + 1.0
        if isinstance(self.source, KafkaSource):
            self.metrics.set_lag(self.source.lag())
        self.metrics.keys.set(len(self.pipeline.states))
        self.metrics.models.set(sum(1 for s in self.pipeline.detector.slots.values() if s.model is not None))
        self.metrics.ready.set(1 if callable(self.ready) and self.ready() else 0)


def serve(config: Config, stop: StopFlag | None = None) -> RunStats:
    """Run until the source ends (files) or a stop is requested (signals, or ``stop.request``)."""
    stop = stop or StopFlag(config.service.shutdown_deadline_s)
    if threading.current_thread() is threading.main_thread():
        stop.install()
    metrics = Metrics()
    with ExitStack() as stack:
        source = build_source(config, stop)
        stack.callback(source.close)
        pipeline = Pipeline(config, source.expected_lengths())
        stack.callback(pipeline.close)
        alert_sinks, dead, observers = open_outputs(config, stack, scores=config.output.scores)
        if isinstance(dead.sink, KafkaSink):
            dead.sink.on_cut = metrics.dead_letters_cut.inc
        observers.insert(0, metrics.observe)
        runner = Runner(
            source,
            pipeline,
            alert_sinks,
            dead,
            observers,
            should_stop=stop,
            commit_interval_s=config.service.commit_interval_s,
            retry_sink_errors=True,
            retry_backoff_s=config.service.retry_backoff_s,
            retry_backoff_max_s=config.service.retry_backoff_max_s,
            log_alerts=True,
            state_dir=Path(config.service.state_dir) if config.service.state_dir else None,
            snapshot_interval_s=config.service.snapshot_interval_s,
            snapshot_keep=config.service.snapshot_keep,
        )
        runner.resume(find_snapshot(runner.state_dir, pipeline, source))

        def ready() -> bool:
            consuming = source.ready if isinstance(source, KafkaSource) else not stop()
            return consuming and runner.sinks_healthy and not stop()

        gauges = _Gauges(metrics, source, pipeline, ready)
        runner.observers.append(gauges)
        if isinstance(source, KafkaSource):
            _wire_rebalance(source, runner, pipeline)
        if config.service.metrics.enabled:
            server = HealthServer(
                metrics,
                config.service.metrics.host,
                config.service.metrics.port,
                lambda: gauges.alive(config.service.liveness_timeout_s),
                ready,
            )
            server.start()
            stack.callback(server.close)
            host, port = server.address
            log.info("metrics_listening", host=host, port=port)
        log.info("started", version=__version__, source=config.source.type, scope=config.model.scope)
        stats = runner.run()
        log.info(
            "stopped",
            events=stats.events,
            alerts=stats.alerts,
            dead_letters=stats.dead_letters,
            seconds=round(stats.seconds, 3),
        )
        return stats


def _wire_rebalance(source: KafkaSource, runner: Runner, pipeline: Pipeline) -> None:
    def on_revoke(partitions: list[Partition]) -> None:
        # Everything polled so far is processed: make it durable, commit it, then let the
        # keys go; the partitions' next owner starts from exactly these offsets. Should the
        # commit fail, the next owner starts from the previous commit: re-sent, not lost.
        try:
            runner.commit(retry=False)  # bounded: a failure here means re-sent, never lost
        except Exception as exc:  # an exception here would break kafka-python's rebalance
            log.warning("revoke_commit_failed", error=str(exc), error_type=type(exc).__name__)
        keys: set[str] = set()
        for part in partitions:
            keys |= source.keys_by_partition.get(part, set())
        pipeline.forget(keys)
        log.info("state_dropped", keys=len(keys))

    source.on_revoke = on_revoke
