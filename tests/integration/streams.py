"""Stream wiring shared by the integration tests that run the real stream on topics of
their own: the four topics and the options that point the stream at them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from txmon.infra.services.kafka import ensure_topics
from txmon.infra.settings import Settings
from txmon.spark_jobs.transactions_stream import StreamOptions

TOPIC_KINDS = ("tx", "dlq", "alerts", "labels")


def stream_topics(settings: Settings, base: str) -> dict[str, str]:
    """``{"tx": f"{base}_tx", ...}``, created on the test session's Kafka."""
    names = {k: f"{base}_{k}" for k in TOPIC_KINDS}
    ensure_topics(settings.kafka.bootstrap, list(names.values()), settings.kafka.partitions)
    return names


def stream_options(
    settings: Settings, names: dict[str, str], tmp: Path, registry: str = "models", **kw: Any
) -> StreamOptions:
    """The stream on ``names``' topics, its checkpoint and model registry under ``tmp``
    (``registry``: the registry's folder there, e.g. one with no models, shared with an
    API under test, so that both score by the rules alone)."""
    return StreamOptions.from_settings(
        settings,
        topic=names["tx"],
        dlq_topic=names["dlq"],
        alerts_topic=names["alerts"],
        labels_topic=names["labels"],
        checkpoint_dir=str(tmp / "ckpt"),
        registry_root=str(tmp / registry),
        **kw,
    )
