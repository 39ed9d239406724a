"""Settings shared by the Kafka consumer and producers: connection and security.

Secrets come from :class:`pydantic.SecretStr` and are unwrapped only here, into the
client's keyword arguments; they are never logged.
"""

from __future__ import annotations

from typing import Any

from anomalyd.config import KafkaConfig


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
