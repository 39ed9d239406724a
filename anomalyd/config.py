"""Frozen, validated configuration loaded once from YAML.

Every section is a pydantic model that forbids unknown keys, so a typo fails at start-up
with the key's path instead of being silently ignored. ``${VAR}`` and ``${VAR:-default}``
in string values are replaced from the environment before validation.

>>> cfg = Config()
>>> cfg.window.length, cfg.model.cell, cfg.threshold.method
(64, 'lstm', 'grade')
>>> load_config_text("model: {hidden_size: -1}")
Traceback (most recent call last):
...
anomalyd.errors.ConfigError: config error at model.hidden_size: got -1, expected a value >= 1
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from anomalyd.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimestampConfig(_Section):
    """Where an event's time comes from. Either ``field``, or ``date_field`` and ``time_field``."""

    field: str | None = "timestamp"
    date_field: str | None = None
    time_field: str | None = None
    format: Literal["auto", "iso", "epoch_s", "epoch_ms"] = "auto"

    @model_validator(mode="after")
    def _one_source(self) -> TimestampConfig:
        if (self.date_field is None) != (self.time_field is None):
            raise ValueError("date_field and time_field must be set together")
        if self.date_field is not None and self.field is not None and self.field != "timestamp":
            raise ValueError("set either field or date_field/time_field, not both")
        return self

    @property
    def split(self) -> bool:
        return self.date_field is not None


FeatureOp = Literal["value", "log_return", "pct_change", "diff", "log", "log1p", "log_ratio", "ratio"]


class FeatureConfig(_Section):
    """A model input derived from raw fields, e.g. the log return of a close price."""

    name: str = Field(min_length=1)
    op: FeatureOp = "value"
    field: str = Field(min_length=1)
    other: str | None = None

    @model_validator(mode="after")
    def _other_for_binary_ops(self) -> FeatureConfig:
        binary = self.op in ("log_ratio", "ratio")
        if binary and self.other is None:
            raise ValueError(f"op {self.op!r} needs 'other' (the denominator field)")
        if not binary and self.other is not None:
            raise ValueError(f"op {self.op!r} takes no 'other'")
        return self


class InputConfig(_Section):
    """How records are read: file format, key, time and value fields."""

    format: Literal["auto", "csv", "jsonl"] = "auto"
    delimiter: str = Field(",", min_length=1, max_length=1)
    timestamp: TimestampConfig = TimestampConfig()
    key_field: str | None = None
    value_fields: tuple[str, ...] = Field(("value",), min_length=1)
    features: tuple[FeatureConfig, ...] = ()
    batch_size: int = Field(1024, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _features_read_declared_fields(self) -> InputConfig:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"feature names must be unique, got {names}")
        for feat in self.features:
            for fld in (feat.field, feat.other):
                if fld is not None and fld not in self.value_fields:
                    raise ValueError(f"feature {feat.name!r} reads {fld!r}, which is not in value_fields")
        return self

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the model's inputs: the derived features, or the raw value fields."""
        return tuple(f.name for f in self.features) if self.features else self.value_fields


class WindowConfig(_Section):
    length: int = Field(64, ge=2, le=4096)
    stride: int = Field(1, ge=1)
    normalise: Literal["running", "warmup", "none"] = "running"


class ModelConfig(_Section):
    cell: Literal["lstm", "gru", "rnn"] = "lstm"
    hidden_size: int = Field(32, ge=1, le=4096)
    num_layers: int = Field(1, ge=1, le=8)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    scope: Literal["per_key", "shared"] = "per_key"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    threads: int | None = Field(None, ge=1, le=1024)
    score_batch_size: int = Field(512, ge=1)
    score_steps: int = Field(1, ge=1, le=4096)
    carry_state: bool = False
    normalise_errors: bool = False
    # three networks' mean by default: one network's errors carry the accidents of its seed and
    # of the CPU's kernels; a carried state belongs to one network, so there one is the default
    members: int = Field(3, ge=1, le=64)
    group_networks: Literal["auto", "on", "off"] = (
        "auto"  # one batched pass for many networks; auto: on a GPU
    )

    @model_validator(mode="wrap")
    @classmethod
    def _one_member_with_carried_state(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        section = handler(data)  # carry_state parsed as pydantic parses it (a ${VAR}'s "true" too)
        if isinstance(data, dict) and section.carry_state and "members" not in section.model_fields_set:
            return handler({**data, "members": 1})
        return section


class TrainingConfig(_Section):
    warmup_events: int = Field(750, ge=1)
    warmup_fraction: float | None = Field(None, gt=0.0, le=1.0)
    epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: float = Field(1.0, gt=0.0)
    max_windows: int = Field(4096, ge=1)
    threads: int = Field(1, ge=1, le=256)
    max_steps: int | None = Field(400, ge=1)  # optimizer steps per training at most; null: epochs decide
    patience: int | None = Field(None, ge=1)  # stop after this many epochs without a better held-back loss


class ThresholdConfig(_Section):
    """Adaptive threshold. ``grade`` (the default) flags a score whose grade
    (:mod:`anomalyd.grading`, learnt from the key's last ``grade_window`` scores) exceeds
    ``grade``, once it has ``min_samples`` scores; ``quantile`` uses quantile/window/margin;
    ``ewma`` uses alpha/k;
    ``spot`` uses risk/level/depth (and min_samples as its calibration size);
    ``likelihood`` uses risk/short/alpha;
    ``river_quantile`` (river's QuantileFilter rule) uses quantile."""

    method: Literal["grade", "quantile", "ewma", "spot", "likelihood", "river_quantile"] = "grade"
    grade: float = Field(0.9999, gt=0.5, lt=1.0)
    grade_window: int = Field(1000, ge=10, le=100_000)
    quantile: float = Field(0.995, gt=0.5, lt=1.0)
    window: int = Field(2000, ge=10)
    margin: float = Field(1.0, gt=0.0)
    alpha: float = Field(0.01, gt=0.0, lt=1.0)
    k: float = Field(4.0, gt=0.0)
    min_samples: int = Field(64, ge=1)
    risk: float = Field(1e-4, gt=0.0, lt=0.5)
    level: float = Field(0.98, gt=0.5, lt=1.0)
    depth: int = Field(0, ge=0, le=10_000)
    short: int = Field(10, ge=1, le=10_000)
    calibration: Literal["warmup", "live"] = "live"


class HstConfig(_Section):
    """river's HalfSpaceTrees, the baseline scorer of ``detector: hst``."""

    n_trees: int = Field(10, ge=1, le=1000)
    height: int = Field(8, ge=1, le=30)
    window_size: int = Field(250, ge=1)
    limit: float = Field(4.0, gt=0.0)
    seed: int = 42
    scaler: Literal["none", "minmax"] = "none"


class RetrainingConfig(_Section):
    """When live models are retrained, off the scoring path, on recent normal windows.

    A retraining starts after ``every_events`` windows scored by a model, after
    ``every_seconds``, or when a drift detector (ADWIN) sees the model's scores shift. The
    candidate trains in a worker thread while the live model keeps scoring; it goes live
    exactly ``swap_after_events`` scored windows after the trigger (the loop waits if it is
    not done by then), so the same stream always gives the same alerts. It must not be worse
    than the live model on held-back recent windows by more than ``tolerance``. Drift counts
    only once ``drift_min_events`` windows were scored since the last retraining started, and
    the detector restarts when a candidate is judged: a new model's scores are not a drift.
    """

    enabled: bool = True
    every_events: int | None = Field(20_000, ge=1)
    every_seconds: float | None = Field(None, gt=0.0)
    on_drift: bool = True
    drift_delta: float = Field(0.002, gt=0.0, lt=1.0)
    drift_min_events: int = Field(4096, ge=0)
    drift_block: int | None = Field(None, ge=1)  # ADWIN reads means of this many scores; null: window.length
    min_windows: int = Field(256, ge=2)
    swap_after_events: int = Field(1024, ge=1)
    tolerance: float = Field(0.1, ge=0.0)
    warm_start: bool = True  # candidates start from the live model's weights, not from scratch
    max_steps: int | None = Field(100, ge=1)  # optimizer steps per retraining; null: training.max_steps


class AlertConfig(_Section):
    min_consecutive: int = Field(1, ge=1)
    cooldown_events: int = Field(256, ge=0)


class EvictionConfig(_Section):
    """When a key's state (windows, threshold, per-key model) is dropped to bound memory."""

    max_keys: int | None = Field(None, ge=1)  # past this, the least recently seen keys go
    idle_ttl_s: float | None = Field(None, gt=0.0)  # in event time: the newest timestamp seen


class SinkConfig(_Section):
    """Where alerts or dead letters go: ``stdout``, a JSON-lines ``file``, or a ``kafka`` topic."""

    type: Literal["stdout", "file", "kafka"]
    path: str | None = None
    topic: str | None = None

    @model_validator(mode="after")
    def _target(self) -> SinkConfig:
        if self.type == "file" and not self.path:
            raise ValueError("a 'file' sink needs a path")
        if self.type == "kafka" and not self.topic:
            raise ValueError("a 'kafka' sink needs a topic")
        return self


class OutputConfig(_Section):
    alerts: tuple[SinkConfig, ...] = (SinkConfig(type="stdout"),)
    dead_letter: SinkConfig | None = None
    scores: str | None = None  # path of a per-event scores CSV (as `replay --scores`)


class KafkaSecurityConfig(_Section):
    """TLS and SASL settings; put secrets in ``${ENV}`` variables, they are never logged."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSecurityConfig:
        if self.protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"protocol {self.protocol} needs sasl_mechanism, sasl_username and sasl_password"
            )
        return self


class KafkaConfig(_Section):
    """The connection shared by the Kafka source and the Kafka sinks."""

    bootstrap_servers: tuple[str, ...] = Field(("127.0.0.1:9092",), min_length=1)
    client_id: str = "anomalyd"
    request_timeout_ms: int = Field(30_000, ge=1000)
    security: KafkaSecurityConfig = KafkaSecurityConfig()

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        """``"a:9092,b:9092"`` (one ``${ENV}`` holding several brokers) becomes two entries."""
        items = [value] if isinstance(value, str) else value
        if isinstance(items, list | tuple):
            return tuple(part.strip() for item in items for part in str(item).split(",") if part.strip())
        return value


class KafkaSourceConfig(_Section):
    """The consumer group. The stream key is ``input.key_field`` if set, else the message key."""

    topics: tuple[str, ...] = ()
    topic_pattern: str | None = None
    group_id: str = "anomalyd"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(10_000, ge=1000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    max_poll_interval_ms: int = Field(300_000, ge=1000)
    fetch_max_wait_ms: int = Field(500, ge=0)
    max_poll_records: int = Field(1000, ge=1)
    poll_timeout_ms: int = Field(200, ge=1)

    @model_validator(mode="after")
    def _topics_or_pattern(self) -> KafkaSourceConfig:
        if bool(self.topics) == bool(self.topic_pattern):
            raise ValueError("set exactly one of topics (a list) or topic_pattern (a regex)")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        return self


class SourceConfig(_Section):
    """What `anomalyd run` reads: files (as a replay) or a Kafka consumer group."""

    type: Literal["file", "kafka"] = "file"
    paths: tuple[str, ...] = ()
    kafka: KafkaSourceConfig | None = None

    @model_validator(mode="after")
    def _complete(self) -> SourceConfig:
        if self.type == "kafka" and self.kafka is None:
            raise ValueError("a 'kafka' source needs a kafka section (topics, group_id, ...)")
        if self.type == "file" and self.kafka is not None:
            raise ValueError("a 'file' source takes paths, not a kafka section")
        return self


class MetricsConfig(_Section):
    """Prometheus metrics, /healthz and /readyz over HTTP; loopback unless configured otherwise."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)


class ServiceConfig(_Section):
    state_dir: str | None = None  # model checkpoints and per-key state snapshots go here
    commit_interval_s: float = Field(5.0, gt=0.0)
    snapshot_interval_s: float = Field(30.0, ge=0.0)
    snapshot_keep: int = Field(3, ge=1)
    shutdown_deadline_s: float = Field(30.0, gt=0.0)
    retry_backoff_s: float = Field(0.5, gt=0.0)
    retry_backoff_max_s: float = Field(30.0, gt=0.0)
    liveness_timeout_s: float = Field(300.0, gt=0.0)  # /healthz: 503 when no batch for this long
    metrics: MetricsConfig = MetricsConfig()


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Config(_Section):
    """The whole configuration; each component receives only its own section."""

    input: InputConfig = InputConfig()
    window: WindowConfig = WindowConfig()
    detector: Literal["autoencoder", "forecaster", "hst"] = "autoencoder"
    model: ModelConfig = ModelConfig()
    hst: HstConfig = HstConfig()
    training: TrainingConfig = TrainingConfig()
    threshold: ThresholdConfig = ThresholdConfig()
    retraining: RetrainingConfig = RetrainingConfig()
    alerts: AlertConfig = AlertConfig()
    eviction: EvictionConfig = EvictionConfig()
    output: OutputConfig = OutputConfig()
    source: SourceConfig = SourceConfig()
    kafka: KafkaConfig = KafkaConfig()
    service: ServiceConfig = ServiceConfig()
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _warmup_covers_a_window(self) -> Config:
        if self.training.warmup_events < self.window.length:
            raise ValueError(
                f"training.warmup_events ({self.training.warmup_events}) must be >= "
                f"window.length ({self.window.length}): the model needs whole windows to learn from"
            )
        steps, length = self.model.score_steps, self.window.length
        most = length - 1 - (length - 1) // 4  # predictions past the forecaster's burn-in
        if steps > 1 and self.detector != "forecaster":
            raise ValueError(f"model.score_steps ({steps}) applies to detector: forecaster only")
        if self.model.carry_state and (self.detector != "forecaster" or steps > 1 or self.window.stride > 1):
            raise ValueError(
                "model.carry_state (true) needs detector: forecaster, model.score_steps 1 and "
                "window.stride 1: the state reads every value of its key, one at a time"
            )
        if self.model.carry_state and self.model.members > 1:
            raise ValueError(
                f"model.carry_state (true) needs model.members 1, got {self.model.members}: "
                "a carried state belongs to one network"
            )
        if self.model.normalise_errors and (self.detector == "hst" or self.threshold.calibration != "live"):
            raise ValueError(
                "model.normalise_errors (true) needs detector: autoencoder or forecaster and "
                "threshold.calibration: live: each feature's typical error is measured on the "
                "first live windows, which then calibrate the threshold"
            )
        if steps > most:
            raise ValueError(
                f"model.score_steps ({steps}) must be <= {most} for window.length {length}: "
                "the newest three quarters of a window's predictions"
            )
        return self


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, path: str) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name, default)
        if value is None:
            raise ConfigError(
                f"config error at {path}: environment variable {name} is not set "
                f"(and no ${{{name}:-default}} given)"
            )
        return value

    return _ENV.sub(substitute, node)


def _describe(err: dict[str, Any]) -> str:
    path = ".".join(str(p) for p in err["loc"]) or "<top level>"
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"config error at {path}: unknown key"
    if kind == "missing":
        return f"config error at {path}: required key is missing"
    got = f"got {err['input']!r}, " if "input" in err and not isinstance(err["input"], dict) else ""
    bounds = {
        "greater_than_equal": ">= {ge}",
        "greater_than": "> {gt}",
        "less_than_equal": "<= {le}",
        "less_than": "< {lt}",
    }
    if kind in bounds:
        expected = "a value " + bounds[kind].format(**ctx)
    elif kind == "too_short":
        expected = f"at least {ctx.get('min_length')} item(s)"
    elif kind == "literal_error":
        expected = f"one of {ctx.get('expected')}"
    elif kind == "value_error":
        return f"config error at {path}: {ctx.get('error', err['msg'])}"
    else:
        expected = err["msg"][0].lower() + err["msg"][1:]
        expected = expected.replace("input should be ", "")
    return f"config error at {path}: {got}expected {expected}"


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return []
        model = field.annotation
    return sorted(model.model_fields)


def parse_config(data: Any) -> Config:
    """Validate a parsed YAML document (a mapping or None) into a :class:`Config`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config error at <top level>: got {type(data).__name__}, expected a mapping of sections"
        )
    data = _interpolate(data, "")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            line = _describe(dict(err))
            if err["type"] == "extra_forbidden":
                keys = _known_keys(Config, tuple(err["loc"]))
                if keys:
                    line += f" (expected one of: {', '.join(keys)})"
            lines.append(line)
        raise ConfigError("; ".join(lines)) from None


def load_config_text(text: str) -> Config:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config error: not valid YAML: {exc}".replace("\n", " ")) from None
    return parse_config(data)


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate a YAML config file; ``None`` gives the documented defaults."""
    if path is None:
        return Config()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config error: cannot read {path}: {exc.strerror}") from None
    try:
        return load_config_text(text)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def config_to_dict(config: Config) -> dict[str, Any]:
    """A plain, YAML-ready dict of the config (for `config check --show`)."""
    return config.model_dump(mode="json")
