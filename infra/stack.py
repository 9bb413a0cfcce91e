"""The local stack as a whole: bring every service up, report on it, take it down."""

from __future__ import annotations

import time
from dataclasses import dataclass

from txmon.infra import credentials, jars
from txmon.infra.services.base import Service, ServiceStatus
from txmon.infra.services.cassandra import CassandraService
from txmon.infra.services.kafka import KafkaService
from txmon.infra.services.webapp import WebAppService
from txmon.infra.settings import Settings


def services(settings: Settings) -> list[Service]:
    return [KafkaService(settings), CassandraService(settings)]


def started_extras(settings: Settings) -> list[Service]:
    """Services `infra up` does not start but `txmon demo` may have (the web application):
    listed while their record exists, so status shows them and down stops them."""
    web = WebAppService.recorded(settings)
    return [web] if web is not None else []


@dataclass(frozen=True)
class UpReport:
    name: str
    started: bool
    ready_after_s: float
    rss_mb: float | None


def up(settings: Settings, log=print) -> list[UpReport]:
    """Start what is not running, wait for real readiness, then create topics/tables.

    Idempotent: running services are left alone, and bootstrapping only adds what is
    missing. Both JVMs start before either is waited on, so their start-up overlaps.
    The first run generates the services' credentials (infra/credentials.py); every run
    puts them into this process's environment, where the JVMs started here find them.
    """
    jars.fetch(settings)
    credentials.ensure(settings)
    svcs = services(settings)
    t0 = time.monotonic()
    started = {}
    for svc in svcs:
        started[svc.name] = svc.start()
        log(f"{svc.name}: {'starting' if started[svc.name] else 'already running'} (pid {svc.process.pid()})")
    reports = []
    for svc in svcs:
        timeout = svc.settings.kafka.ready_timeout_s if svc.name == "kafka" else svc.settings.cassandra.ready_timeout_s
        svc.wait_ready(timeout)
        ready_after = time.monotonic() - t0
        svc.bootstrap()
        reports.append(UpReport(svc.name, started[svc.name], ready_after, svc.process.rss_mb()))
        log(f"{svc.name}: ready on {svc.host}:{svc.ports[0]} after {ready_after:.1f}s")
    return reports


def status(settings: Settings) -> list[ServiceStatus]:
    return [svc.status() for svc in [*services(settings), *started_extras(settings)]]


def down(settings: Settings, purge: bool = False, log=print) -> None:
    """Stop every service: the web application first (a client of both), then Kafka, so no
    client writes into a stopping Cassandra."""
    for svc in [*started_extras(settings), *services(settings)]:
        stopped = svc.stop()
        log(f"{svc.name}: {'stopped' if stopped else 'was not running'}")
        if purge:
            svc.purge()
            log(f"{svc.name}: data deleted")
