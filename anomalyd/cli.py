"""Command line: parse, load config, build the app, run. No logic here.

Exit codes: 0 success, 2 usage or config error, 1 runtime error; the reason in one line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, Literal, TypeVar

import click
import yaml

from anomalyd import __version__
from anomalyd.config import Config, config_to_dict, load_config
from anomalyd.errors import AnomalydError, ConfigError

F = TypeVar("F", bound=Callable[..., Any])


def _fail(code: int, message: str) -> None:
    click.echo(f"anomalyd: error: {message}", err=True)
    sys.exit(code)


def _clean_errors(func: F) -> F:
    """Turn our errors into one line and an exit code, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            _fail(2, str(exc))
        except AnomalydError as exc:
            _fail(1, str(exc))
        except KeyboardInterrupt:
            _fail(130, "interrupted")
        except BrokenPipeError:
            sys.exit(0)
        except (click.ClickException, click.exceptions.Exit, SystemExit):
            raise
        except Exception as exc:  # a bug or an unexpected failure: still one line, traceback on debug
            from anomalyd.logs import get_logger

            get_logger("anomalyd").debug("unexpected_error", exc_info=True)
            _fail(1, f"unexpected {type(exc).__name__}: {exc}")

    return wrapper  # type: ignore[return-value]


def _check_inputs(paths: tuple[str, ...]) -> None:
    """Exit 2 with one line (no usage block) when an input is missing, a folder, or matches nothing."""
    from anomalyd.sources.file import resolve_paths

    try:
        resolve_paths(paths)
    except AnomalydError as exc:
        _fail(2, str(exc))


def _load(config_path: str | None) -> Config:
    config = load_config(config_path)
    from anomalyd.logs import setup_logging

    setup_logging(config.logging.level, config.logging.format)
    return config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="anomalyd")
def main() -> None:
    """anomalyd: streaming anomaly detection with recurrent autoencoders."""


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "-c",
    "--config",
    "config_path",
    help="YAML config (default: built-in defaults, as config/default.yaml).",
)
@click.option(
    "--alerts",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write alerts (JSON lines) to FILE instead of the config's sinks.",
)
@click.option(
    "--scores",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write file,key,timestamp,score,threshold,is_anomaly per event.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Draw series, score, threshold and alerts to a PNG.",
)
@click.option(
    "--dead-letter",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write malformed records (JSON lines, with reason) to FILE.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Snapshot state and models here, and resume from its newest snapshot if there is one.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: only on a terminal).")
@_clean_errors
def replay(
    paths: tuple[str, ...],
    config_path: str | None,
    alerts: Path | None,
    scores: Path | None,
    plot: Path | None,
    dead_letter: Path | None,
    state_dir: Path | None,
    progress: bool | None,
) -> None:
    """Replay CSV/JSONL files (gzip too, globs allowed) through the detection pipeline.

    With --state-dir a replay that was stopped or killed goes on from its last snapshot
    (service.snapshot_interval_s) and appends to its outputs; delete the folder to start over.
    """
    from anomalyd.app import ReplayOutputs
    from anomalyd.app import replay as run_replay
    from anomalyd.progress import ProgressBar

    config = _load(config_path)
    _check_inputs(paths)
    show = sys.stderr.isatty() if progress is None else progress
    with ProgressBar(enabled=show) as bar:
        stats = run_replay(
            paths,
            config,
            ReplayOutputs(alerts, scores, plot, dead_letter),
            [bar.update],
            bar.start,
            state_dir=state_dir,
        )
    click.echo(
        f"replayed {stats.events} events of {len(stats.keys)} key(s) in {stats.seconds:.1f} s "
        f"({stats.events_per_second:,.0f} events/s): {stats.alerts} alert(s), "
        f"{stats.dead_letters} dead letter(s)",
        err=True,
    )


def _evaluate_usage(suite: str | None, data_dir: Path | None, nab_labels: Path | None, skab: bool,
                    replay_options: bool, alerts: Path | None, scores: Path | None) -> None:  # fmt: skip
    """Reject flag combinations `evaluate` cannot act on (exit 2, as any usage error)."""
    if sum((suite is not None, nab_labels is not None, skab)) != 1:
        raise click.UsageError("give exactly one of --suite, --nab-labels, --skab")
    if (suite is None) != (data_dir is None):
        raise click.UsageError("DATA_DIR goes with --suite, and only with it")
    if suite is not None and (alerts or scores):
        raise click.UsageError(
            "--suite writes its own outputs; score existing ones with --nab-labels or --skab"
        )
    if suite is None and replay_options:
        raise click.UsageError("-c, --baseline and --workdir go with --suite")
    if nab_labels is not None and not (alerts or scores):
        raise click.UsageError("--nab-labels needs --alerts and/or --scores")
    if skab and (scores is None or alerts is not None):
        raise click.UsageError("--skab needs --scores (its is_anomaly column) and takes no --alerts")


_EXISTING_FILE = click.Path(dir_okay=False, exists=True, path_type=Path)


@main.command()
@click.argument("data_dir", required=False, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--suite", type=click.Choice(["nab", "skab"]), help="Replay every file of DATA_DIR, then score."
)
@click.option(
    "--nab-labels",
    type=_EXISTING_FILE,
    help="Score existing outputs against NAB's combined_windows.json (data files in ../data beside it).",
)
@click.option("--skab", is_flag=True, help="Score an existing --scores CSV against the SKAB files it names.")
@click.option("-c", "--config", "config_path", help="YAML config for --suite.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep --suite outputs here (alerts.jsonl, scores.csv, runs/); default: a temporary folder.",
)
@click.option(
    "--baseline",
    "baseline_path",
    type=click.Path(dir_okay=False, exists=True),
    help="With --suite: also replay this config (e.g. config/nab-hst.yaml) and print it beside ours.",
)
@click.option("--alerts", "alerts_path", type=_EXISTING_FILE, help="Existing alerts (JSON lines) to score.")
@click.option("--scores", "scores_path", type=_EXISTING_FILE, help="Existing scores CSV to score.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write JSON.")
@_clean_errors
def evaluate(
    data_dir: Path | None, suite: str | None, nab_labels: Path | None, skab: bool, config_path: str | None,
    workdir: Path | None, baseline_path: str | None, alerts_path: Path | None, scores_path: Path | None,
    json_path: Path | None,
) -> None:  # fmt: skip
    """Score anomalyd on NAB or SKAB: replay a benchmark folder, or score existing outputs.

    \b
    anomalyd evaluate --suite nab|skab DATA_DIR [-c CONFIG] [--baseline CONFIG] [--workdir DIR] [--json FILE]
    anomalyd evaluate --nab-labels FILE [--alerts ALERTS.jsonl] [--scores SCORES.csv] [--json FILE]
    anomalyd evaluate --skab --scores SCORES.csv [--json FILE]
    """
    import json

    from anomalyd.evaluation import NabReport, evaluate_suite, score_nab, score_skab
    from anomalyd.evaluation.table import format_comparison, format_nab, format_skab

    replay_options = config_path is not None or workdir is not None or baseline_path is not None
    _evaluate_usage(suite, data_dir, nab_labels, skab, replay_options, alerts_path, scores_path)
    baseline = None
    if suite is not None and data_dir is not None:
        config = _load(config_path)
        kind: Literal["nab", "skab"] = "nab" if suite == "nab" else "skab"

        def announce(index: int, total: int, name: str) -> None:
            click.echo(f"[{index}/{total}] replaying {name}", err=True)

        report = evaluate_suite(kind, data_dir, config, workdir, announce)
        if baseline_path is not None:
            where = workdir / "baseline" if workdir is not None else None
            baseline = evaluate_suite(kind, data_dir, load_config(baseline_path), where, announce)
    elif nab_labels is not None:
        report = score_nab(nab_labels, alerts_path, scores_path)
    else:
        assert scores_path is not None
        report = score_skab(scores_path)
    if json_path is not None:
        body = report.to_dict() if baseline is None else {**report.to_dict(), "baseline": baseline.to_dict()}
        json_path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    click.echo(format_nab(report) if isinstance(report, NabReport) else format_skab(report))
    if baseline is not None:
        click.echo("\nbaseline (" + str(baseline_path) + "):")
        click.echo(format_nab(baseline) if isinstance(baseline, NabReport) else format_skab(baseline))
        click.echo("\n" + format_comparison(report, baseline))


@main.command()
@click.option("-c", "--config", "config_path", required=True, help="YAML config.")
@_clean_errors
def run(config_path: str) -> None:
    """Run the service until stopped (SIGTERM/SIGINT): Kafka or files in, alerts out."""
    from anomalyd.service import serve

    serve(_load(config_path))


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--topic", required=True, help="Topic to send the records to.")
@click.option(
    "--bootstrap-servers", help="host:port[,host:port]; default: the config's kafka.bootstrap_servers."
)
@click.option("-c", "--config", "config_path", help="Config: input and kafka sections.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Events per second (default: as fast as possible).",
)
@click.option("--loop", is_flag=True, help="Start over at the end of the files, until interrupted.")
@_clean_errors
def produce(
    paths: tuple[str, ...], topic: str, bootstrap_servers: str | None, config_path: str | None,
    rate: float | None, loop: bool,
) -> None:  # fmt: skip
    """Stream CSV/JSONL records into a Kafka topic as JSON, keyed by stream key."""
    from anomalyd.produce import produce as run_produce

    config = _load(config_path)
    if bootstrap_servers:
        servers = tuple(s.strip() for s in bootstrap_servers.split(",") if s.strip())
        config = config.model_copy(
            update={"kafka": config.kafka.model_copy(update={"bootstrap_servers": servers})}
        )
    _check_inputs(paths)
    sent = run_produce(paths, topic, config, rate, loop)
    click.echo(f"sent {sent} records to {topic}", err=True)


@main.group()
def model() -> None:
    """Inspect the model checkpoints in a state directory; roll a model back."""


@model.command("list")
@click.argument("state_dir", type=click.Path(file_okay=False, exists=True))
@_clean_errors
def model_list(state_dir: str) -> None:
    """One line per checkpoint: model, version, created, validation loss, reason, path."""
    import datetime

    from anomalyd.checkpoint import list_models

    for entry in list_models(Path(state_dir)):
        if "error" in entry:
            click.echo(f"BAD  {entry['path']}: {entry['error']}")
            continue
        created = datetime.datetime.fromtimestamp(entry["created_at"], datetime.UTC).isoformat(
            timespec="seconds"
        )
        click.echo(
            f"{entry['model_id'] or 'shared'}  v{entry['version']}  {created}  "
            f"val_loss={entry.get('validation_loss', float('nan')):.4g}  "
            f"{entry.get('reason', '')}  {entry['path']}"
        )


@model.command("show")
@click.argument("path", type=click.Path(dir_okay=False, exists=True))
@_clean_errors
def model_show(path: str) -> None:
    """A checkpoint's metadata and model arguments, as YAML."""
    from anomalyd.checkpoint import load_model

    loaded, meta = load_model(Path(path))
    click.echo(yaml.safe_dump({"meta": meta, "args": loaded.args.to_dict()}, sort_keys=False), nl=False)


@model.command("rollback")
@click.argument("state_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("version", type=click.IntRange(min=1))
@click.option("--model", "model_id", help="The model id (the key with scope per_key); needed if several.")
@_clean_errors
def model_rollback(state_dir: Path, version: int, model_id: str | None) -> None:
    """Put checkpoint VERSION of a model live again, as a new version.

    The running daemon (or the next start, or a resumed replay) takes the request over at
    its next commit step, recalibrates the keys' thresholds to the old model's score scale
    and logs model_rolled_back.
    """
    from anomalyd.checkpoint import request_rollback

    path = request_rollback(state_dir, version, model_id)
    click.echo(f"rollback to v{version} requested ({path}); the daemon applies it at its next commit step")


@main.group()
def config() -> None:
    """Check configuration files."""


@config.command("check")
@click.argument("file")
@click.option("--show", is_flag=True, help="Print the full config with every default filled in.")
@_clean_errors
def config_check(file: str, show: bool) -> None:
    """Validate FILE; exit 2 naming the first bad key."""
    cfg = load_config(file)
    if show:
        click.echo(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), nl=False)
    else:
        click.echo(f"{file}: ok")


if __name__ == "__main__":  # pragma: no cover
    main()
