"""KafkaSource on errors no retry cures: a fake consumer raises what kafka-python raises.

Tansu has no ACLs, so authorization failures cannot be provoked on the test broker.
"""

from __future__ import annotations

import time

import pytest
from kafka.errors import GroupAuthorizationFailedError, KafkaTimeoutError, TopicAuthorizationFailedError

from anomalyd.config import InputConfig, KafkaConfig, KafkaSourceConfig
from anomalyd.errors import SourceError
from anomalyd.sources.kafka import KafkaSource


class FakeCluster:
    """kafka-python's metadata cache as the consumer keeps it: the topics the cluster knows."""

    def __init__(self, topics: set[str]):
        self._topics = topics

    def topics(self) -> set[str]:
        return self._topics

    def brokers(self) -> set[int]:
        return {111}


class FakeConsumer:
    def __init__(self, poll_errors: list[Exception], commit_error: Exception | None = None, topics=("in",)):
        self.poll_errors, self.commit_error, self.polls = poll_errors, commit_error, 0
        self._cluster = FakeCluster(set(topics))

    def poll(self, timeout_ms: int, max_records: int) -> dict:
        self.polls += 1
        if self.poll_errors:
            raise self.poll_errors.pop(0)
        return {}

    def commit(self, offsets: dict) -> None:
        if self.commit_error is not None:
            raise self.commit_error

    def close(self, autocommit: bool = False) -> None:
        pass


def source_with(consumer: FakeConsumer) -> KafkaSource:
    connection = KafkaConfig(request_timeout_ms=1000)
    source = KafkaSource(KafkaSourceConfig(topics=("in",)), connection, InputConfig(), retry_backoff_s=0.01)
    source._connect = lambda: consumer  # type: ignore[method-assign]
    return source


def test_a_transient_poll_error_is_retried():
    consumer = FakeConsumer([KafkaTimeoutError("slow")])
    batches = source_with(consumer).batches()
    assert next(batches).events == []
    assert consumer.polls == 2


@pytest.mark.parametrize("error", [TopicAuthorizationFailedError("in"), GroupAuthorizationFailedError("g")])
def test_an_authorization_failure_in_poll_is_a_source_error(error):
    with pytest.raises(SourceError, match=r"cannot consume in: .*Authorization"):
        next(source_with(FakeConsumer([error])).batches())


def test_an_authorization_failure_at_commit_is_a_source_error():
    source = source_with(FakeConsumer([], commit_error=GroupAuthorizationFailedError("g")))
    next(source.batches())
    source.assigned.add(("in", 0))
    with pytest.raises(SourceError, match="cannot commit offsets of in"):
        source.commit({("in", 0): 5})


def test_a_topic_the_cluster_does_not_know_ends_the_source_in_bounded_time():
    source = source_with(FakeConsumer([], topics=("other",)))
    started = time.monotonic()
    with pytest.raises(SourceError, match="topic 'in' does not exist"):
        for _ in source.batches():
            assert time.monotonic() - started < 10
    assert time.monotonic() - started >= 1.0  # the metadata had request_timeout_ms to show it


def test_a_known_topic_is_waited_for_as_long_as_it_takes_to_be_assigned():
    source = source_with(FakeConsumer([]))
    batches = source.batches()
    started = time.monotonic()
    while time.monotonic() - started < 1.5:
        next(batches)
