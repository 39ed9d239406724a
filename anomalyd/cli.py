"""Command line: parse, load config, build the app, run. No logic here.

Exit codes: 0 success, 2 usage or config error, 1 runtime error; the reason in one line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

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
    type=click.Path(dir_okay=False),
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
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: only on a terminal).")
@_clean_errors
def replay(
    paths: tuple[str, ...],
    config_path: str | None,
    alerts: Path | None,
    scores: Path | None,
    plot: Path | None,
    dead_letter: Path | None,
    progress: bool | None,
) -> None:
    """Replay CSV/JSONL files (gzip too, globs allowed) through the detection pipeline."""
    from anomalyd.app import ReplayOutputs
    from anomalyd.app import replay as run_replay
    from anomalyd.progress import ProgressBar
    from anomalyd.sources.file import resolve_paths

    config = _load(config_path)
    try:
        resolve_paths(paths)
    except AnomalydError as exc:
        raise click.UsageError(str(exc)) from None
    show = sys.stderr.isatty() if progress is None else progress
    with ProgressBar(enabled=show) as bar:
        stats = run_replay(
            paths, config, ReplayOutputs(alerts, scores, plot, dead_letter), [bar.update], bar.start
        )
    click.echo(
        f"replayed {stats.events} events of {len(stats.keys)} key(s) in {stats.seconds:.1f} s "
        f"({stats.events_per_second:,.0f} events/s): {stats.alerts} alert(s), "
        f"{stats.dead_letters} dead letter(s)",
        err=True,
    )


@main.command()
@click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False), required=True, help="YAML config."
)
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
@click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False), help="Config: input and kafka sections."
)
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
    from anomalyd.sources.file import resolve_paths

    config = _load(config_path)
    if bootstrap_servers:
        servers = tuple(s.strip() for s in bootstrap_servers.split(",") if s.strip())
        config = config.model_copy(
            update={"kafka": config.kafka.model_copy(update={"bootstrap_servers": servers})}
        )
    try:
        resolve_paths(paths)
    except AnomalydError as exc:
        raise click.UsageError(str(exc)) from None
    sent = run_produce(paths, topic, config, rate, loop)
    click.echo(f"sent {sent} records to {topic}", err=True)


@main.group()
def config() -> None:
    """Check configuration files."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
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
