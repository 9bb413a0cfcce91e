"""Wiring: Cassandra store, channels, deliverer and directory from the configuration,
for the commands (dispatch, retry-failed, digest), the DAG and the benchmark."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from txmon.alerting.channels import Channel, build_channels
from txmon.alerting.config import AlertingConfig
from txmon.alerting.delivery import Deliverer, utcnow
from txmon.alerting.dispatcher import Dispatcher, DispatchStats, make_consumer
from txmon.alerting.errors import AlertStoreUnavailableError
from txmon.alerting.routing import Directory
from txmon.alerting.store import AlertStore, open_store
from txmon.infra.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    config: AlertingConfig
    store: AlertStore
    channels: dict[str, Channel]
    deliverer: Deliverer
    directory: Directory


@contextmanager
def runtime(
    settings: Settings,
    config: AlertingConfig,
    *,
    needed: set[str] | None = None,
    channels: dict[str, Channel] | None = None,
    now: Callable[[], datetime] = utcnow,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Runtime]:
    """Everything connected; secrets are read (and missing ones reported) here.
    ``needed`` limits the channels built (default: those the routes use, plus email);
    ``channels`` replaces them outright."""
    channels = channels if channels is not None else build_channels(config, needed)
    directory = Directory(config, channels=set(channels))
    cluster, store = open_store(settings)
    try:
        deliverer = Deliverer(
            channels,
            store,
            config.retry,
            circuit=config.circuit,
            in_doubt=config.dispatcher.in_doubt,
            now=now,
            sleep=sleep,
        )
        yield Runtime(settings, config, store, channels, deliverer, directory)
    finally:
        for channel in channels.values():
            channel.close()
        cluster.shutdown()


def dispatch(
    settings: Settings,
    config: AlertingConfig,
    *,
    topic: str | None = None,
    group_id: str | None = None,
    max_messages: int | None = None,
    idle_timeout_s: float | None = None,
    stop: threading.Event | None = None,
    now: Callable[[], datetime] = utcnow,
) -> DispatchStats:
    """Run the dispatcher (what ``txmon alerts dispatch`` does)."""
    # The Cassandra driver on first connection.
    from cassandra import DriverException

    topic = topic or config.dispatcher.topic or settings.kafka.topics.alerts
    group_id = group_id or config.dispatcher.group_id
    with runtime(settings, config, now=now) as rt:
        dispatcher = Dispatcher(config, rt.store, rt.deliverer, rt.directory, now=now)
        consumer = make_consumer(settings.kafka.bootstrap, group_id, config.dispatcher)
        try:
            return dispatcher.run(
                consumer,
                topic=topic,
                group_id=group_id,
                max_messages=max_messages,
                idle_timeout_s=idle_timeout_s,
                stop=stop,
            )
        except DriverException as exc:
            raise AlertStoreUnavailableError(
                f"Cassandra failed mid-dispatch ({type(exc).__name__}: {exc}); nothing after the last "
                "recorded outcome was committed - restart the dispatcher once Cassandra is healthy"
            ) from exc
        finally:
            consumer.close(autocommit=False)
            dispatcher.close()
