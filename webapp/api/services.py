"""What the API's routes share in one worker: settings, the Cassandra store, the scorer,
the key verifier, the rate limiter, the metrics and (made on first use) the Kafka producer."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from txmon.infra.errors import TxmonError
from txmon.infra.masking import pii_token_key
from txmon.infra.settings import Settings
from txmon.ingestion.producer import TransactionProducer
from txmon.models.config import models_dir
from txmon.webapp.api.config import ApiSettings
from txmon.webapp.api.keys import KeyVerifier
from txmon.webapp.api.limits import TokenBuckets
from txmon.webapp.api.metrics import ApiMetrics
from txmon.webapp.api.scorer import Profiles, Scorer
from txmon.webapp.api.store import ApiStore


class Store(Protocol):
    """What the routes and the key verifier ask of Cassandra: :class:`txmon.webapp.api.store.ApiStore`,
    or an in-memory stand-in with the same methods in unit tests. Rows are the driver's
    (attributes by column name)."""

    def ping(self) -> str: ...
    def profiles(self, payer: str, payee: str | None) -> Profiles: ...
    def key(self, key_id: str) -> Any: ...
    def add_key(self, key_id: str, name: str, scopes: set[str], secret_hash: str) -> bool: ...
    def claim_decision(self, txn_id: str, content_hash: str, verdict_json: str, key_id: str) -> tuple[bool, Any]: ...
    def decision_published(self, txn_id: str) -> None: ...
    def decision(self, txn_id: str) -> Any: ...
    def claim_label(self, label_id: str, content_hash: str, txn_id: str, key_id: str) -> tuple[bool, Any]: ...
    def label_sent(self, label_id: str) -> None: ...
    def scored(self, txn_id: str) -> Any: ...
    def transaction(self, txn_id: str) -> Any: ...
    def alerts_page(self, day: Any, limit: int, paging_state: bytes | None) -> tuple[list, bytes | None]: ...
    def account_windows(self, account: str, kind: str, since: datetime | None) -> list: ...


class _Failures(Protocol):
    failed: int


class Producer(Protocol):
    """What the routes ask of Kafka: :class:`txmon.ingestion.producer.TransactionProducer`,
    or an in-memory stand-in in unit tests."""

    @property
    def summary(self) -> _Failures: ...
    def send_event(self, event: Any) -> None: ...
    def send_label(self, key: bytes, value: bytes) -> None: ...
    def flush(self, timeout: float | None = ...) -> None: ...
    def close(self, timeout: float = ...) -> Any: ...


class KafkaUnavailable(TxmonError):
    """The transactions or labels topic did not acknowledge a record in time."""


def paging_key(settings: Settings) -> bytes:
    """The key that signs ``/v1/alerts`` page tokens: derived from the PII token key
    (infra/masking.pii_token_key: ``$TXMON_PII_TOKEN_KEY``, else the state directory's key
    file), the secret every worker already shares, so a token one worker issued is honoured
    by the next. Derived, not the key itself: a page token's MAC must not double as an
    account's pseudonym."""
    return hmac.new(pii_token_key(settings.state_path), b"txmon api: alerts page token", hashlib.sha256).digest()


@dataclass
class ApiServices:
    settings: Settings
    api: ApiSettings
    store: Store
    scorer: Scorer
    verifier: KeyVerifier
    buckets: TokenBuckets
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    max_age: timedelta | None = None
    """Events older than this are refused as the stream refuses them (contract.max_event_age_days)."""
    producer_factory: Callable[[], Producer] | None = None
    page_key: bytes | None = None
    """Signs ``/v1/alerts`` page tokens (routes.py); None: derived on first use (:meth:`paging_key`)."""
    _producer: Producer | None = None
    _producer_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, settings: Settings, api: ApiSettings) -> ApiServices:
        store = ApiStore(settings, timeout_s=api.cassandra_timeout_s)
        scorer = Scorer(api.rules_path, api.registry_root or models_dir())
        return cls(
            settings=settings,
            api=api,
            store=store,
            scorer=scorer,
            verifier=KeyVerifier(store, api.key_cache_s),
            buckets=TokenBuckets(api.rate_per_s, api.burst),
            max_age=timedelta(days=settings.contract.max_event_age_days),
            page_key=paging_key(settings),  # at start: a key too short is a ConfigError now, not a 500 later
        )

    def paging_key(self) -> bytes:
        """The key of the page tokens: :attr:`page_key`, else derived from the settings."""
        if self.page_key is None:
            self.page_key = paging_key(self.settings)
        return self.page_key

    def producer(self) -> Producer:
        """The worker's Kafka producer (ingestion/producer.TransactionProducer), made on first use."""
        if self._producer is None:
            with self._producer_lock:
                if self._producer is None:
                    try:
                        if self.producer_factory is not None:
                            self._producer = self.producer_factory()
                        else:
                            # No linger: a request waits for its own record's acknowledgement.
                            self._producer = TransactionProducer(
                                self.settings, linger_ms=0, max_block_ms=int(self.api.kafka_timeout_s * 1000)
                            )
                    except Exception as exc:  # noqa: BLE001 - any failure to reach Kafka is "unavailable"
                        raise KafkaUnavailable(
                            f"Kafka unavailable ({type(exc).__name__}: {str(exc)[:200]}); retry shortly"
                        ) from None
        return self._producer

    def publish(self, send) -> None:
        """Run ``send(producer)`` and wait until Kafka acknowledged it; KafkaUnavailable if not.

        The producer counts failures, not which record failed: a failure by any request
        in this worker while this one waited is taken as this one's (a retry is safe:
        records are idempotent by txn_id / label id)."""
        producer = self.producer()
        failed = producer.summary.failed
        send(producer)
        try:
            producer.flush(timeout=self.api.kafka_timeout_s)
        except Exception as exc:  # noqa: BLE001 - kafka-python raises its own timeout types
            raise KafkaUnavailable(
                f"Kafka did not acknowledge in {self.api.kafka_timeout_s:.0f} s ({type(exc).__name__}); retry"
            ) from None
        if producer.summary.failed != failed:
            raise KafkaUnavailable("Kafka refused the record; retry")

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None
        close = getattr(self.store, "close", None)
        if close is not None:
            close()
