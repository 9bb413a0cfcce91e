"""Judge raw Kafka records in Python, before Spark interprets any of their bytes.

The contract (``ingestion.events.validate_event``) is the single definition of a valid
event, for the producer and for the stream alike. Here it is applied to whole Arrow
record batches (``mapInArrow``: one Python call per batch, no per-row JVM round trip),
and every record gets a verdict: either a typed row (the Cassandra layout of
``transactions``) or a dead letter with its reason. Nothing here raises on a record.

Spark never parses the payload itself: its ``from_json`` and casts run with ANSI mode on
and fail the whole micro-batch on one value they cannot convert (``"event_time":
"yesterday"``), and a failed micro-batch is replayed and fails again, forever. The typed
columns are therefore built here, from the event the contract already parsed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from txmon.infra.errors import EventValidationError
from txmon.ingestion.events import DeadLetterReason, TransactionEvent, safe_text, validate_event

# (name, Spark SQL type) of a landed transaction, in the order of the ``transactions``
# table's columns as the stream binds them; ``landed_at`` is stamped by the landing task.
TYPED_FIELDS: tuple[tuple[str, str], ...] = (
    ("txn_id", "string"),
    ("schema_version", "int"),
    ("event_time", "timestamp"),
    ("channel", "string"),
    ("txn_type", "string"),
    ("payer_account", "string"),
    ("payer_ifsc", "string"),
    ("payer_vpa", "string"),
    ("payee_account", "string"),
    ("payee_ifsc", "string"),
    ("payee_vpa", "string"),
    ("amount_paise", "long"),
    ("currency", "string"),
    ("mcc", "string"),
    ("device_id", "string"),
    ("ip", "string"),
    ("city", "string"),
    ("lat", "double"),
    ("lon", "double"),
    ("status", "string"),
    ("kafka_partition", "int"),
    ("kafka_offset", "long"),
    ("kafka_timestamp", "timestamp"),
    ("landed_at", "timestamp"),
)
TRANSACTION_COLUMNS: tuple[str, ...] = tuple(name for name, _ in TYPED_FIELDS)
DEAD_LETTER_COLUMNS: tuple[str, ...] = (
    "topic",
    "kafka_partition",
    "kafka_offset",
    "reason",
    "detail",
    "raw_key",
    "raw_value",
    "kafka_timestamp",
    "landed_at",
)
RAW_COLUMNS = ("key", "value", "topic", "partition", "offset", "kafka_ts")

MAX_DETAIL_CHARS = 1000
# A dead letter keeps at most this much of its payload (the rest is counted in the detail):
# the dead-letter topic's records must stay under the broker's message size limit, and a
# Cassandra batch of dead letters under its batch size limit, whatever a producer sent.
MAX_RAW_CHARS = 16_384
MAX_KEY_CHARS = 256


@dataclass(frozen=True)
class Judge:
    """How records are judged: the contract's knobs the stream sets from its settings.
    Small and picklable (shipped to Spark's Python workers)."""

    max_age: timedelta | None = None

    @classmethod
    def from_settings(cls, settings) -> Judge:
        return cls(max_age=timedelta(days=settings.contract.max_event_age_days))


def typed_schema():
    """The landed transaction rows as a Spark schema (:data:`TYPED_FIELDS`)."""
    # pyspark and pyarrow on first use: the scoring API imports this module without Spark.
    from pyspark.sql import types as T

    kinds = {
        "string": T.StringType(),
        "int": T.IntegerType(),
        "long": T.LongType(),
        "double": T.DoubleType(),
        "timestamp": T.TimestampType(),
    }
    return T.StructType([T.StructField(name, kinds[kind]) for name, kind in TYPED_FIELDS])


def validated_schema():
    # lazy: pyspark (750 ms to import); the web app's workers load this module without it
    from pyspark.sql import types as T

    return T.StructType(
        [
            T.StructField("key", T.StringType()),
            T.StructField("value", T.StringType()),
            T.StructField("topic", T.StringType()),
            T.StructField("partition", T.IntegerType()),
            T.StructField("offset", T.LongType()),
            T.StructField("kafka_ts", T.TimestampType()),
            T.StructField("dlq_reason", T.StringType()),
            T.StructField("dlq_detail", T.StringType()),
        ]
    )


def display_text(raw: bytes | str | None, limit: int) -> str | None:
    """A payload as storable text: invalid UTF-8 and lone surrogates escaped, cut at
    ``limit`` characters with the size that was cut.

    >>> display_text(b'{"a":1}\\xff', 100)
    '{"a":1}\\\\xff'
    >>> display_text(b"x" * 10, 4)
    'xxxx...[6 more characters]'
    """
    if raw is None:
        return None
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, (bytes, bytearray)) else safe_text(raw)
    if len(text) > limit:
        return f"{text[:limit]}...[{len(text) - limit} more characters]"
    return text


def verdict(raw: bytes | str | None, now: datetime, judge: Judge = Judge()) -> TransactionEvent | EventValidationError:
    """The event, or the error that says why not, for one raw record value. Never raises.

    >>> verdict(b"\\xff{}", datetime(2025, 1, 6, tzinfo=UTC)).reason
    'malformed_json'
    >>> verdict(None, datetime(2025, 1, 6, tzinfo=UTC)).detail
    'empty Kafka record value'
    """
    try:
        if raw is None:
            return EventValidationError(str(DeadLetterReason.MALFORMED_JSON), "empty Kafka record value")
        if isinstance(raw, (bytes, bytearray)):
            try:
                raw = bytes(raw).decode("utf-8")
            except UnicodeDecodeError as exc:
                return EventValidationError(
                    str(DeadLetterReason.MALFORMED_JSON), f"not valid UTF-8 ({exc}); events are UTF-8 JSON"
                )
        return validate_event(raw, now=now, max_age=judge.max_age)
    except EventValidationError as exc:
        return EventValidationError(str(exc.reason), safe_text(exc.detail)[:MAX_DETAIL_CHARS])
    except Exception as exc:  # noqa: BLE001 - a record must get a verdict, never stop the stream
        return EventValidationError(
            str(DeadLetterReason.UNPROCESSABLE), safe_text(f"{type(exc).__name__}: {exc}")[:MAX_DETAIL_CHARS]
        )


def event_values(e: TransactionEvent) -> tuple:
    """The typed values of one event, in :data:`TYPED_FIELDS` order up to ``status``."""
    geo = e.geo
    return (
        e.txn_id,
        e.schema_version,
        e.event_time,
        e.channel.value,
        e.txn_type.value,
        e.payer.account_number,
        e.payer.ifsc,
        e.payer.vpa,
        e.payee.account_number,
        e.payee.ifsc,
        e.payee.vpa,
        e.amount_paise,
        e.currency,
        e.mcc,
        e.device_id,
        e.ip,
        geo.city if geo else None,
        geo.lat if geo else None,
        geo.lon if geo else None,
        e.status.value,
    )


_EVENT_FIELDS = len(TYPED_FIELDS) - 4  # the last four come from Kafka and the landing task


@dataclass
class Judged:
    """One Arrow batch of raw records, judged: the valid records as typed rows (an Arrow
    batch of :data:`TYPED_FIELDS`) and the rest as dead-letter tuples
    (:data:`DEAD_LETTER_COLUMNS`, timestamps naive UTC as the Cassandra driver binds them)."""

    valid: object  # pyarrow.RecordBatch
    dead_letters: list[tuple]
    index: list[int]  # row i of ``valid`` is record index[i] of the raw batch


def judge_batch(batch, now: datetime, judge: Judge = Judge()) -> Judged:
    """Judge every record of a raw Arrow batch (:data:`RAW_COLUMNS`; ``key``/``value``
    binary or text). ``now`` is the contract's clock and the ``landed_at`` stamp."""
    # lazy: pyarrow (66 ms to import); the web app's workers load this module without it
    import pyarrow as pa

    stamp_type = batch.column("kafka_ts").type
    values = batch.column("value").to_pylist()
    rows: list[tuple] = []
    keep: list[int] = []
    bad: list[tuple[int, EventValidationError]] = []
    for i, raw in enumerate(values):
        outcome = verdict(raw, now, judge)
        if isinstance(outcome, EventValidationError):
            bad.append((i, outcome))
        else:
            try:
                rows.append(event_values(outcome))
                keep.append(i)
            except Exception as exc:  # noqa: BLE001 - as in verdict: never stop on a record
                bad.append(
                    (
                        i,
                        EventValidationError(
                            DeadLetterReason.UNPROCESSABLE, safe_text(f"{type(exc).__name__}: {exc}")[:MAX_DETAIL_CHARS]
                        ),
                    )
                )
    columns = list(zip(*rows)) if rows else [()] * _EVENT_FIELDS
    arrays = [
        pa.array(list(col), type=_arrow_type(kind, stamp_type))
        for col, (_, kind) in zip(columns, TYPED_FIELDS[:_EVENT_FIELDS])
    ]
    picked = pa.array(keep, pa.int64())
    arrays += [
        batch.column("partition").take(picked).cast(pa.int32()),
        batch.column("offset").take(picked),
        batch.column("kafka_ts").take(picked),
        pa.repeat(pa.scalar(now, stamp_type), len(keep)) if keep else pa.array([], stamp_type),
    ]
    valid = pa.RecordBatch.from_arrays(arrays, names=list(TRANSACTION_COLUMNS))
    return Judged(valid, dead_letter_rows(batch, bad, now), keep)


def dead_letter_rows(batch, bad: list[tuple[int, EventValidationError]], now: datetime) -> list[tuple]:
    """Dead-letter tuples for the records at the given indexes of a raw batch."""
    if not bad:
        return []
    landed = now.astimezone(UTC).replace(tzinfo=None)
    keys, values = batch.column("key"), batch.column("value")
    topics, partitions, offsets, stamps = (batch.column(c) for c in ("topic", "partition", "offset", "kafka_ts"))
    out = []
    for i, error in bad:
        stamp = stamps[i].as_py()
        if stamp is not None and stamp.tzinfo is not None:
            stamp = stamp.astimezone(UTC).replace(tzinfo=None)
        out.append(
            (
                topics[i].as_py(),
                partitions[i].as_py(),
                offsets[i].as_py(),
                str(error.reason),
                error.detail,
                display_text(keys[i].as_py(), MAX_KEY_CHARS),
                display_text(values[i].as_py(), MAX_RAW_CHARS),
                stamp,
                landed,
            )
        )
    return out


def _arrow_type(kind: str, stamp_type):
    # lazy: pyarrow (66 ms to import); the web app's workers load this module without it
    import pyarrow as pa

    return {
        "string": pa.string(),
        "int": pa.int32(),
        "long": pa.int64(),
        "double": pa.float64(),
        "timestamp": stamp_type,
    }[kind]


def with_verdicts(batch, judge: Judge = Judge()):
    """A raw Arrow batch plus ``dlq_reason``/``dlq_detail`` (null for a valid event), with
    key and value as display text (for batch reads of a topic and the bench)."""
    # lazy: pyarrow (66 ms to import); the web app's workers load this module without it
    import pyarrow as pa

    now = datetime.now(UTC)
    reasons: list[str | None] = []
    details: list[str | None] = []
    for raw in batch.column("value").to_pylist():
        outcome = verdict(raw, now, judge)
        if isinstance(outcome, EventValidationError):
            reasons.append(str(outcome.reason))
            details.append(outcome.detail)
        else:
            reasons.append(None)
            details.append(None)
    texts = [
        pa.array([display_text(v, 1 << 30) for v in batch.column(c).to_pylist()], pa.string()) for c in ("key", "value")
    ]
    return pa.RecordBatch.from_arrays(
        [
            *texts,
            *(batch.column(c) for c in RAW_COLUMNS[2:]),
            pa.array(reasons, pa.string()),
            pa.array(details, pa.string()),
        ],
        names=[*RAW_COLUMNS, "dlq_reason", "dlq_detail"],
    )


def validate_batches(batches: Iterator) -> Iterator:
    """mapInArrow function: append (dlq_reason, dlq_detail) to every record."""
    for batch in batches:
        yield with_verdicts(batch)


def raw_records(raw_df):
    """Kafka source DataFrame -> :data:`RAW_COLUMNS`, key and value as the bytes sent."""
    # lazy: pyspark (750 ms to import); the web app's workers load this module without it
    from pyspark.sql import functions as F

    return raw_df.select("key", "value", "topic", "partition", "offset", F.col("timestamp").alias("kafka_ts"))


def validate(raw_df):
    """Kafka source DataFrame -> raw columns (key/value as display text) + dlq_reason/detail.

    For reads that need the verdict as columns; the ingest query judges inside its landing
    step instead (spark_jobs/transactions_stream.land_partition)."""
    return raw_records(raw_df).mapInArrow(validate_batches, validated_schema())


def valid_transactions(raw_df, judge: Judge = Judge()):
    """Kafka source DataFrame -> the typed rows of its valid events (batch jobs over history
    and the bench; ``landed_at`` is when the task judged them)."""

    def run(batches: Iterator) -> Iterator:
        for batch in batches:
            yield judge_batch(batch, datetime.now(UTC), judge).valid

    return raw_records(raw_df).mapInArrow(run, typed_schema())
