"""Settings shared by the Kafka consumer and producers: connection, security, error kinds.

Secrets come from :class:`pydantic.SecretStr` and are unwrapped only here, into the
client's keyword arguments; they are never logged.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import errors

from anomalyd.config import KafkaConfig

# No retry cures these: credentials, ACLs or the topic must change first.
_FATAL: tuple[type[BaseException], ...] = (
    errors.AuthorizationError,
    errors.SaslAuthenticationFailedError,
    errors.UnsupportedSaslMechanismError,
    errors.IllegalSaslStateError,
    errors.InvalidTopicError,
)
# The broker (or the producer's max_request_size) refuses this record, however often it is sent.
_REFUSED: tuple[type[BaseException], ...] = (
    errors.MessageSizeTooLargeError,
    errors.RecordListTooLargeError,
    errors.InvalidRecordError,
)


def is_fatal(exc: BaseException) -> bool:
    """An error only a change of configuration or ACLs can cure (exit 1, not a retry)."""
    return isinstance(exc, _FATAL)


def is_refused_record(exc: BaseException) -> bool:
    """The record itself can never be published as it is (too large, invalid)."""
    return isinstance(exc, _REFUSED)


class _ConnectionFailures(logging.Handler):
    """kafka-python logs why a connection failed (SASL refused, say) but raises only a
    bootstrap timeout: keep the last such cause, so it can be named."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.error: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        for arg in args:
            if isinstance(arg, BaseException) and is_fatal(arg):
                self.error = arg


_FAILURES = _ConnectionFailures()


def watch_connections() -> None:
    """Start (again) keeping the cause of a failed connection; see :func:`connection_failure`."""
    logger = logging.getLogger("kafka")
    if _FAILURES not in logger.handlers:
        logger.addHandler(_FAILURES)
    _FAILURES.error = None


def connection_failure() -> BaseException | None:
    """A fatal cause (authentication) of a failed connection since :func:`watch_connections`."""
    return _FAILURES.error


def client_options(config: KafkaConfig) -> dict[str, Any]:
    """kafka-python keyword arguments for the connection and its security."""
    security = config.security
    options: dict[str, Any] = {
        "bootstrap_servers": list(config.bootstrap_servers),
        "client_id": config.client_id,
        "request_timeout_ms": config.request_timeout_ms,
        "bootstrap_timeout_ms": config.request_timeout_ms,
        "security_protocol": security.protocol,
    }
    if security.protocol in ("SSL", "SASL_SSL"):
        options["ssl_check_hostname"] = security.ssl_check_hostname
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(security, name):
                options[name] = getattr(security, name)
        if security.ssl_password is not None:
            options["ssl_password"] = security.ssl_password.get_secret_value()
    if security.protocol.startswith("SASL"):
        assert security.sasl_password is not None  # checked by the config model
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = security.sasl_password.get_secret_value()
    return options


def describe(config: KafkaConfig) -> dict[str, Any]:
    """What may be logged about a connection: servers, client id, protocol; no secrets."""
    return {
        "bootstrap_servers": list(config.bootstrap_servers),
        "client_id": config.client_id,
        "security_protocol": config.security.protocol,
    }
