"""The loop: poll a source, process, publish, commit. Shared by `replay` and the daemon."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from anomalyd.config import Config, SinkConfig
from anomalyd.logs import get_logger
from anomalyd.pipeline import BatchResult, Pipeline
from anomalyd.sinks.base import Record, Sink
from anomalyd.sinks.jsonl import FileSink, StdoutSink
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


def build_sink(config: SinkConfig) -> Sink:
    if config.type == "stdout":
        return StdoutSink()
    assert config.path is not None
    return FileSink(config.path)


def run(
    source: Source,
    pipeline: Pipeline,
    alert_sinks: Sequence[Sink],
    dead_letters: Sink,
    observers: Iterable[Observer] = (),
    should_stop: Callable[[], bool] = lambda: False,
    commit_interval_s: float = 1.0,
) -> RunStats:
    """Feed every batch of ``source`` through ``pipeline`` until it ends or ``should_stop()``.

    The commit step, run every ``commit_interval_s`` and once more at the end:

    1. flush every alert sink and the dead-letter sink (durable, or it raises);
    2. commit the source's positions of the last processed batch.

    So a crash can re-send alerts (with the same ``alert_id``) but never lose one.
    """
    observers = list(observers)
    stats = RunStats()
    started = last_commit = time.monotonic()
    positions = None

    def commit() -> None:
        for sink in (*alert_sinks, dead_letters):
            sink.flush()
        if positions is not None:
            source.commit(positions)
        log.debug("committed", positions=positions)

    for batch in source.batches():
        result = pipeline.process(batch)
        for alert in result.alerts:
            for sink in alert_sinks:
                sink.add(alert)
        for dead in result.dead_letters:
            dead_letters.add(dead)
        for model_id, version in result.trained:
            report = pipeline.detector.slot(model_id).last_report
            log.info("model_trained", model=model_id or "shared", version=version, **_report_fields(report))
        for observe in observers:
            observe(result)
        stats.events += len(result.events)
        stats.alerts += len(result.alerts)
        stats.dead_letters += len(result.dead_letters)
        stats.batches += 1
        positions = batch.positions
        if time.monotonic() - last_commit >= commit_interval_s:
            commit()
            last_commit = time.monotonic()
        if should_stop():
            break
    commit()
    stats.seconds = time.monotonic() - started
    stats.keys = set(pipeline.states)
    return stats


def _report_fields(report: object) -> dict[str, object]:
    if report is None:
        return {}
    return {k: getattr(report, k) for k in ("windows", "epochs", "train_loss", "validation_loss")}


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
) -> RunStats:
    """Replay files through the same loop as the daemon; the library entry point of `anomalyd replay`."""
    from anomalyd.plot import PlotCollector
    from anomalyd.sinks.scores import ScoresWriter

    outputs = outputs or ReplayOutputs()
    with ExitStack() as stack:
        source = FileSource(paths, config.input)
        stack.callback(source.close)
        pipeline = Pipeline(config, source.expected_lengths())
        if outputs.alerts is not None:
            alert_sinks: list[Sink] = [FileSink(outputs.alerts, append=False)]
        else:
            alert_sinks = [build_sink(s) for s in config.output.alerts]
        for sink in alert_sinks:
            stack.callback(sink.close)
        dead_config = config.output.dead_letter
        if outputs.dead_letter is not None:
            dead_sink: Sink | None = FileSink(outputs.dead_letter, append=False)
        else:
            dead_sink = build_sink(dead_config) if dead_config else None
        dead = DeadLetterSink(dead_sink)
        stack.callback(dead.close)
        all_observers = list(observers)
        if outputs.scores is not None:
            writer = ScoresWriter(outputs.scores)
            stack.callback(writer.close)
            all_observers.append(writer.write)
        collector = PlotCollector(config.input.feature_names) if outputs.plot is not None else None
        if collector is not None:
            all_observers.append(collector.add)
        total_rows = source.total_rows()
        log.info("replay_started", files=len(source.paths), rows=total_rows)
        if on_start is not None:
            on_start(total_rows)
        stats = run(source, pipeline, alert_sinks, dead, all_observers)
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
