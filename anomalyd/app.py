"""The loop: poll a source, process, publish, commit. Shared by `replay` and the daemon."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anomalyd.config import Config, KafkaConfig, SinkConfig
from anomalyd.errors import ModelError, PermanentSinkError, SinkError
from anomalyd.logs import get_logger
from anomalyd.pipeline import BatchResult, Pipeline
from anomalyd.sinks.base import Record, Sink
from anomalyd.sinks.jsonl import FileSink, StdoutSink
from anomalyd.snapshot import Found, SnapshotStore
from anomalyd.sources.base import Source
from anomalyd.sources.file import FileSource

log = get_logger("anomalyd")

Observer = Callable[[BatchResult], None]


@dataclass
class RunStats:
    events: int = 0
    alerts: int = 0
    dead_letters: int = 0
    batches: int = 0
    seconds: float = 0.0
    keys: set[str] = field(default_factory=set)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


class DeadLetterSink:
    """Logs every dead letter with its reason and, when configured, keeps it in a sink."""

    def __init__(self, sink: Sink | None):
        self.sink = sink

    def add(self, record: Record) -> None:
        fields = record.to_dict()
        log.warning("record_dead_lettered", reason=fields["reason"], source=fields["source"])
        if self.sink is not None:
            self.sink.add(record)

    def flush(self) -> None:
        if self.sink is not None:
            self.sink.flush()

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


def open_outputs(
    config: Config,
    stack: ExitStack,
    alerts: Path | None = None,
    dead_letter: Path | None = None,
    scores: Path | str | None = None,
    append: bool = False,
) -> tuple[list[Sink], DeadLetterSink, list[Observer]]:
    """The alert sinks, the dead-letter sink and the scores writer a run needs, closed by ``stack``.

    ``alerts`` and ``dead_letter`` replace the config's sinks with a JSON-lines file, fresh
    unless ``append`` (a resumed run).
    """
    from anomalyd.sinks.scores import ScoresWriter

    if alerts is not None:
        alert_sinks: list[Sink] = [FileSink(alerts, append=append)]
    else:
        alert_sinks = [build_sink(s, config.kafka) for s in config.output.alerts]
    for sink in alert_sinks:
        stack.callback(sink.close)
    dead_config = config.output.dead_letter
    if dead_letter is not None:
        dead = DeadLetterSink(FileSink(dead_letter, append=append))
    else:
        dead = DeadLetterSink(build_sink(dead_config, config.kafka) if dead_config else None)
    stack.callback(dead.close)
    observers: list[Observer] = []
    if scores is not None:
        writer = ScoresWriter(scores, append=append)
        stack.callback(writer.close)
        observers.append(writer)  # flushed at the commit step, as the sinks
    return alert_sinks, dead, observers


def find_snapshot(state_dir: Path | None, pipeline: Pipeline, source: Source) -> Found | None:
    """The newest usable snapshot for this config and input in ``state_dir`` (None: none)."""
    if state_dir is None:
        return None
    return SnapshotStore(state_dir).latest(pipeline.state_hash, source.identity())


def build_sink(config: SinkConfig, connection: KafkaConfig) -> Sink:
    if config.type == "stdout":
        return StdoutSink()
    if config.type == "kafka":
        from anomalyd.sinks.kafka import KafkaSink

        assert config.topic is not None
        return KafkaSink(config.topic, connection)
    assert config.path is not None
    return FileSink(config.path)


class Runner:
    """Feeds every batch of ``source`` through ``pipeline`` until it ends or ``should_stop()``.

    The commit step (:meth:`commit`), run every ``commit_interval_s``, before partitions are
    revoked, and once more at the end:

    1. flush every alert sink, the dead-letter sink and every observer that keeps a file
       (the scores CSV) (durable, or it raises SinkError);
    2. with a state directory, snapshot the state as of the last processed batch: at the
       first commit step of a run, when ``snapshot_interval_s`` has passed, and at the end;
    3. commit the source's positions of the last processed batch; with a state directory
       only right after a snapshot of that batch, so offsets never pass state that a
       restart could not rebuild.

    So a crash can re-send alerts (with the same ``alert_id``) but never lose one. With
    ``retry_sink_errors`` (the daemon) a failed flush is retried with backoff until it
    works or a stop is requested; nothing is committed meanwhile.
    """

    def __init__(
        self,
        source: Source,
        pipeline: Pipeline,
        alert_sinks: Sequence[Sink],
        dead_letters: Sink,
        observers: Iterable[Observer] = (),
        should_stop: Callable[[], bool] = lambda: False,
        commit_interval_s: float = 1.0,
        retry_sink_errors: bool = False,
        retry_backoff_s: float = 0.5,
        retry_backoff_max_s: float = 30.0,
        log_alerts: bool = False,
        state_dir: Path | None = None,
        snapshot_interval_s: float = 30.0,
        snapshot_keep: int = 3,
    ):
        self.source = source
        self.pipeline = pipeline
        self.alert_sinks = list(alert_sinks)
        self.dead_letters = dead_letters
        self.observers = list(observers)
        self._flushed: list[Any] = [o for o in self.observers if callable(getattr(o, "flush", None))]
        self.should_stop = should_stop
        self.commit_interval_s = commit_interval_s
        self.retry_sink_errors = retry_sink_errors
        self.retry_backoff_s = retry_backoff_s
        self.retry_backoff_max_s = retry_backoff_max_s
        self.log_alerts = log_alerts
        self.state_dir = state_dir
        self.snapshots = SnapshotStore(state_dir, snapshot_keep) if state_dir is not None else None
        self.snapshot_interval_s = snapshot_interval_s
        self.positions: dict[Any, Any] | None = None
        self.sinks_healthy = True
        self.stats = RunStats()
        # The first commit step of a run snapshots at once: a daemon that crash-loops
        # faster than snapshot_interval_s still moves its snapshot and offsets on.
        self._snapshot_at = -math.inf
        self._unsaved = False  # batches processed since the last snapshot

    def resume(self, found: Found | None) -> None:
        """Take over a snapshot's state and seek the source to its positions."""
        if found is None:
            return
        self.pipeline.set_state(found.payload["state"])
        positions = found.payload["positions"]
        if positions is not None:
            self.source.seek(positions)
        log.info(
            "snapshot_restored",
            path=str(found.path),
            keys=len(self.pipeline.states),
            models=len(self.pipeline.detector.slots),
            positions=positions,
        )
        if self.state_dir is not None:
            self.apply_rollbacks()

    def apply_rollbacks(self) -> None:
        """Put live the checkpoints ``anomalyd model rollback`` asked for (between batches)."""
        from anomalyd.checkpoint import load_model, pending_rollbacks, save_model

        assert self.state_dir is not None
        for request, body in pending_rollbacks(self.state_dir):
            model_id = str(body.get("model_id", ""))
            slot = self.pipeline.detector.slots.get(model_id)
            if slot is None or slot.model is None:
                continue  # not live here (yet): the request waits
            request.unlink(missing_ok=True)
            try:
                model, meta = load_model(Path(body["path"]), self.pipeline.detector.args)
            except (ModelError, KeyError) as exc:
                log.error("rollback_failed", model=model_id or "shared", error=str(exc))
                continue
            previous = slot.version
            version = self.pipeline.install(model_id, model.to(self.pipeline.detector.device))
            self._unsaved = True
            fields = {k: meta.get(k) for k in _REPORT_FIELDS}
            save_model(
                self.state_dir,
                model_id,
                version,
                model,
                {
                    **fields,
                    "reason": "rollback",
                    "rolled_back_to": meta["version"],
                    "config_hash": self.pipeline.config_hash,
                },
            )
            log.info(
                "model_rolled_back",
                model=model_id or "shared",
                to=meta["version"],
                previous=previous,
                version=version,
            )

    def snapshot(self) -> None:
        """Save the state as of the last processed batch with its positions (:mod:`anomalyd.snapshot`)."""
        assert self.snapshots is not None
        started = time.monotonic()
        positions = None if self.positions is None else self.source.encode_positions(self.positions)
        payload = {"positions": positions, "state": self.pipeline.get_state()}
        path = self.snapshots.save(payload, self.pipeline.state_hash, self.source.identity())
        self._snapshot_at, self._unsaved = time.monotonic(), False
        log.info(
            "snapshot_saved",
            path=str(path),
            keys=len(self.pipeline.states),
            bytes=path.stat().st_size,
            seconds=round(self._snapshot_at - started, 3),
        )

    def commit(self, final: bool = False, retry: bool = True) -> None:
        """The commit step; ``retry=False``: one try at the flush (a rebalance cannot wait)."""
        delay = self.retry_backoff_s
        while True:
            try:
                for sink in (*self.alert_sinks, self.dead_letters, *self._flushed):
                    sink.flush()
                break
            except SinkError as exc:
                self.sinks_healthy = False
                permanent = isinstance(exc, PermanentSinkError)
                if permanent or not (retry and self.retry_sink_errors) or self.should_stop():
                    raise
                log.warning("flush_failed", error=str(exc), retry_in_s=delay)
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline and not self.should_stop():
                    time.sleep(0.05)
                delay = min(2 * delay, self.retry_backoff_max_s)
        self.sinks_healthy = True
        if self.state_dir is not None:
            self.apply_rollbacks()
        # Alerts up to here are durable: the state that made them may be saved, then the
        # offsets committed, no further than that state. A restart resumes from the
        # snapshot's own positions; offsets past it would skip records whose alerts a
        # fresh state could not raise again.
        if self.snapshots is not None:
            due = final or time.monotonic() - self._snapshot_at >= self.snapshot_interval_s
            if not (self._unsaved and due):
                return  # the offsets committed last are those of the newest snapshot
            try:
                self.snapshot()
            except OSError as exc:  # disk full, folder gone: keep going, commit nothing
                if final:
                    raise
                log.error("snapshot_failed", error=str(exc), state_dir=str(self.state_dir))
                return
        if self.positions is not None:
            self.source.commit(self.positions)

    def _checkpoint(self, result: BatchResult) -> None:
        """Save every model that went live in this batch (versioned, atomic) to the state directory."""
        from anomalyd.checkpoint import save_model

        assert self.state_dir is not None
        live = [(m, v, "warmup") for m, v in result.trained]
        live += [(o.model_id, o.version, o.reason) for o in result.retrained if o.promoted]
        for model_id, version, reason in live:
            slot = self.pipeline.detector.slots.get(model_id)
            if slot is None or slot.model is None or slot.version != version:
                continue
            report = slot.last_report
            meta = {
                "reason": reason,
                **_report_fields(report),
                "config_hash": self.pipeline.config_hash,
                # the data it learned from ends before this: the batch in which it went live
                "data_until": result.events[-1].timestamp if result.events else None,
            }
            path = save_model(self.state_dir, model_id, version, slot.model, meta)
            log.info("checkpoint_saved", model=model_id or "shared", version=version, path=str(path))

    def run(self) -> RunStats:
        stats = self.stats
        started = last_commit = time.monotonic()
        for batch in self.source.batches():
            result = self.pipeline.process(batch)
            for alert in result.alerts:
                for sink in self.alert_sinks:
                    sink.add(alert)
                if self.log_alerts:
                    log.info("alert_published", alert_id=alert.alert_id, key=alert.key, score=alert.score)
            for dead in result.dead_letters:
                self.dead_letters.add(dead)
            for model_id, version in result.trained:
                report = self.pipeline.detector.slot(model_id).last_report
                log.info(
                    "model_trained", model=model_id or "shared", version=version, **_report_fields(report)
                )
            for outcome in result.retrained:
                log.info(
                    "model_retrained",
                    model=outcome.model_id or "shared",
                    promoted=outcome.promoted,
                    reason=outcome.reason,
                    version=outcome.version,
                    windows=outcome.windows,
                    validation_loss=outcome.validation_loss,
                    champion_loss=outcome.champion_loss,
                    scale=outcome.scale,
                    steps=outcome.steps,
                    seconds=outcome.seconds,
                )
            if self.state_dir is not None:
                self._checkpoint(result)
            for observe in self.observers:
                observe(result)
            stats.events += len(result.events)
            stats.alerts += len(result.alerts)
            stats.dead_letters += len(result.dead_letters)
            stats.batches += 1
            self.positions = batch.positions
            self._unsaved = self._unsaved or bool(batch.events or batch.dead_letters)
            if time.monotonic() - last_commit >= self.commit_interval_s:
                self.commit()
                last_commit = time.monotonic()
            if self.should_stop():
                break
        self.commit(final=True)
        stats.seconds = time.monotonic() - started
        stats.keys = set(self.pipeline.states)
        return stats


_REPORT_FIELDS = ("windows", "epochs", "train_loss", "validation_loss", "steps", "seconds")


def _report_fields(report: object) -> dict[str, object]:
    if report is None:
        return {}
    return {k: getattr(report, k) for k in _REPORT_FIELDS}


@dataclass
class ReplayOutputs:
    """Where a replay writes; ``None`` keeps the config's choice (stdout for alerts)."""

    alerts: Path | None = None
    scores: Path | None = None
    plot: Path | None = None
    dead_letter: Path | None = None


def replay(
    paths: Sequence[str],
    config: Config,
    outputs: ReplayOutputs | None = None,
    observers: Iterable[Observer] = (),
    on_start: Callable[[int], None] | None = None,
    state_dir: Path | None = None,
) -> RunStats:
    """Replay files through the same loop as the daemon; the library entry point of `anomalyd replay`.

    With ``state_dir`` the run snapshots its state there (``service.snapshot_interval_s``,
    and at the end) and, when a snapshot for these files and this config is there already,
    resumes from it: outputs are appended to, and only what follows the snapshot is read.
    """
    from anomalyd.plot import PlotCollector

    outputs = outputs or ReplayOutputs()
    with ExitStack() as stack:
        source = FileSource(paths, config.input)
        stack.callback(source.close)
        pipeline = Pipeline(config, source.expected_lengths())
        stack.callback(pipeline.close)
        found = find_snapshot(state_dir, pipeline, source)
        # Resuming: the outputs of the run so far are kept and added to.
        alert_sinks, dead, all_observers = open_outputs(
            config, stack, outputs.alerts, outputs.dead_letter, outputs.scores, append=found is not None
        )
        all_observers = list(observers) + all_observers
        collector = PlotCollector(config.input.feature_names) if outputs.plot is not None else None
        if collector is not None:
            all_observers.append(collector.add)
        total_rows = source.total_rows()
        log.info("replay_started", files=len(source.paths), rows=total_rows)
        if on_start is not None:
            on_start(total_rows)
        runner = Runner(
            source,
            pipeline,
            alert_sinks,
            dead,
            all_observers,
            state_dir=state_dir,
            snapshot_interval_s=config.service.snapshot_interval_s,
            snapshot_keep=config.service.snapshot_keep,
        )
        runner.resume(found)
        stats = runner.run()
        if collector is not None and outputs.plot is not None:
            collector.save(outputs.plot)
        log.info(
            "replay_finished",
            events=stats.events,
            alerts=stats.alerts,
            dead_letters=stats.dead_letters,
            keys=len(stats.keys),
            seconds=round(stats.seconds, 3),
            events_per_second=round(stats.events_per_second),
        )
        return stats
