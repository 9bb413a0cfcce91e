"""The dashboard's counts per IST hour: what the stream's outputs step adds up per
micro-batch and Spark partition, and how the console reads them back.

One ``console_hourly`` row per (IST hour, query, Spark partition) holds that partition's
running counts. A task adds its micro-batch to the stored counts and writes the sum with
the micro-batch's token (``<query>#<batch id>``) and the counts it started from
(``previous``). Spark replays an unfinished micro-batch with the same offsets, so the
same rows reach the same partition: the replay finds its own token and adds to
``previous`` again, which overwrites the first attempt instead of adding to it. (Counter
columns would count a replay twice.) The dashboard then reads O(hours x partitions)
small rows instead of every scored transaction.

Counts (JSON in the table): ``transactions``, ``alerts`` (REVIEW + BLOCK), ``decisions``
and ``models`` (transactions per decision / model version), ``rules`` (reason codes
of the alerts) and ``newest_alert`` (latest alert creation, ISO UTC).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from txmon.infra import statements as cql
from txmon.infra.errors import TxmonError

IST_OFFSET = timedelta(hours=5, minutes=30)
"""IST is UTC+05:30 all year: IST hours start at half past UTC hours, and an IST day is
exactly 24 of them (alerting.contract.DAY_TZ is the same zone)."""
ALERTING = ("REVIEW", "BLOCK")


def hour_of(t: datetime) -> datetime:
    """The start of the IST hour holding ``t``, as an aware UTC datetime."""
    if t.tzinfo is None:  # the driver and Arrow give naive UTC
        t = t.replace(tzinfo=UTC)
    local = t.astimezone(UTC) + IST_OFFSET
    return local.replace(minute=0, second=0, microsecond=0) - IST_OFFSET


def day_of(t: datetime) -> date:
    """The IST date of an instant (naive: UTC, as the driver gives it): the partition key
    of ``console_hourly`` and ``fraud_labels_by_day``.

    >>> day_of(datetime(2026, 12, 5, 18, 30)), day_of(datetime(2026, 12, 5, 18, 29))
    (datetime.date(2026, 12, 6), datetime.date(2026, 12, 5))
    """
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t.astimezone(UTC) + IST_OFFSET).date()


def empty() -> dict[str, Any]:
    return {"transactions": 0, "alerts": 0, "decisions": {}, "models": {}, "rules": {}, "newest_alert": None}


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The sum of two counts (maps added key by key, the later ``newest_alert``)."""
    out = empty()
    for key in ("transactions", "alerts"):
        out[key] = a.get(key, 0) + b.get(key, 0)
    for key in ("decisions", "models", "rules"):
        merged = Counter(a.get(key) or {})
        merged.update(b.get(key) or {})
        out[key] = dict(merged)
    newest = [t for t in (a.get("newest_alert"), b.get("newest_alert")) if t]
    out["newest_alert"] = max(newest) if newest else None
    return out


_HOUR_US = 3_600_000_000
_OFFSET_US = int(IST_OFFSET.total_seconds() * 1_000_000)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _start_micros(event_times: Any) -> Any:
    """IST hour starts (microseconds since the epoch) of an Arrow timestamp column."""
    # lazy: pyarrow (157 ms to import); txmon.infra.fraud_label_days imports this module without it
    import pyarrow as pa
    import pyarrow.compute as pc

    tz = getattr(event_times.type, "tz", None)
    micros = pc.cast(pc.cast(event_times, pa.timestamp("us", tz)), pa.int64())
    return pc.subtract(pc.multiply(pc.divide(pc.add(micros, _OFFSET_US), _HOUR_US), _HOUR_US), _OFFSET_US)


def hour_starts(event_times: Any) -> list[datetime | None]:
    """The IST hour start of each value of an Arrow timestamp column (or array)."""
    cache: dict[int, datetime] = {}
    out: list[datetime | None] = []
    for v in _start_micros(event_times).to_pylist():
        if v is None:
            out.append(None)
        else:
            out.append(cache.setdefault(v, _EPOCH + timedelta(microseconds=v)))
    return out


def batch_counts(
    hours: Iterable[datetime | None],
    decisions: Iterable[str | None],
    models: Iterable[str | None],
    alerts: Iterable[tuple[datetime, list[str], datetime]] = (),
) -> dict[datetime, dict[str, Any]]:
    """Counts per IST hour of one batch of scored transactions, given as three parallel
    columns (each row's hour start, :func:`hour_of`; decision; model version), and of its
    alerts as (event time, reason codes, created at)."""
    cells: Counter[tuple[datetime, str, str]] = Counter(
        (h, d or "", m or "") for h, d, m in zip(hours, decisions, models) if h is not None
    )
    return _counts(((h, d, m, n) for (h, d, m), n in cells.items()), alerts)


def arrow_counts(
    event_times: Any, decisions: Any, models: Any, alerts: Iterable[tuple[datetime, list[str], datetime]] = ()
) -> dict[datetime, dict[str, Any]]:
    """:func:`batch_counts` of Arrow columns, grouped in Arrow (the stream's outputs step
    calls it on every scored row: ~10x less CPU than the Python loop)."""
    # lazy: pyarrow (157 ms to import); txmon.infra.fraud_label_days imports this module without it
    import pyarrow as pa
    import pyarrow.compute as pc

    table = pa.table(
        {
            "h": _start_micros(event_times),
            "d": pc.fill_null(pc.cast(decisions, pa.string()), ""),
            "m": pc.fill_null(pc.cast(models, pa.string()), ""),
        }
    )
    grouped = table.group_by(["h", "d", "m"]).aggregate([("h", "count")]).to_pydict()
    cells = (
        (_EPOCH + timedelta(microseconds=h), d, m, n)
        for h, d, m, n in zip(grouped["h"], grouped["d"], grouped["m"], grouped["h_count"])
        if h is not None
    )
    return _counts(cells, alerts)


def _counts(
    cells: Iterable[tuple[datetime, str, str, int]], alerts: Iterable[tuple[datetime, list[str], datetime]]
) -> dict[datetime, dict[str, Any]]:
    per: dict[datetime, dict[str, Any]] = {}
    for hour, decision, model, n in cells:
        c = per.setdefault(hour, empty())
        c["transactions"] += n
        c["alerts"] += n if decision in ALERTING else 0
        c["decisions"][decision] = c["decisions"].get(decision, 0) + n
        if model:
            c["models"][model] = c["models"].get(model, 0) + n
    for t, codes, created in alerts:
        c = per.setdefault(hour_of(t), empty())
        for code in codes:
            c["rules"][code] = c["rules"].get(code, 0) + 1
        stamp = _iso(created)
        if c["newest_alert"] is None or stamp > c["newest_alert"]:
            c["newest_alert"] = stamp
    return per


def _iso(t: datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fold(stored: tuple[str, str, str | None] | None, token: str, batch: dict[str, Any]) -> tuple[str, str]:
    """(counts, previous) as JSON to write for one hour's row, given the stored
    (token, counts, previous) or None: a replay of ``token`` starts again from previous."""
    if stored is None:
        base = empty()
    elif stored[0] == token:
        base = json.loads(stored[2]) if stored[2] else empty()
    else:
        base = json.loads(stored[1])
    return json.dumps(merge(base, batch), separators=(",", ":")), json.dumps(base, separators=(",", ":"))


def write_batch(session: Any, prepare: Any, query: str, part: int, token: str, per_hour: dict) -> int:
    """Add one task's micro-batch counts to its rows: a read and a write per hour it
    touched, all reads in flight at once, then all writes (a micro-batch of replayed
    history crosses many hours, and one round trip after another put their sum on the
    task's critical path). ``prepare(session, cql)`` gives a prepared statement
    (infra.cassandra_schema.prepared)."""
    select, insert = prepare(session, cql.HOURLY_ROW), prepare(session, cql.HOURLY_INSERT)
    keys = [(day_of(h), h.astimezone(UTC).replace(tzinfo=None), query, part) for h in per_hour]
    reads = [session.execute_async(select, key) for key in keys]
    writes = []
    for key, read, counts in zip(keys, reads, per_hour.values(), strict=True):
        row = read.result().one()
        stored = (row.batch_token, row.counts, row.previous) if row is not None else None
        writes.append(session.execute_async(insert, (*key, token, *fold(stored, token, counts))))
    for write in writes:
        write.result()  # raises the first failure: the caller retries the whole (idempotent) step
    return len(per_hour)


def read_hours(session: Any, prepare: Any, since: datetime, until: datetime) -> dict[datetime, dict[str, Any]]:
    """The counts of every IST hour starting in [hour_of(since), until], summed over
    queries and partitions: one read per IST day."""
    first = hour_of(since)
    stmt = prepare(session, cql.HOURLY_RANGE)
    days = []
    day = day_of(first)
    while day <= day_of(hour_of(until)):
        days.append(day)
        day += timedelta(days=1)
    lo, hi = first.astimezone(UTC).replace(tzinfo=None), until.astimezone(UTC).replace(tzinfo=None)
    futures = [session.execute_async(stmt, (d, lo, hi)) for d in days]
    out: dict[datetime, dict[str, Any]] = {}
    for future in futures:
        for r in future.result():
            hour = r.hour.replace(tzinfo=UTC) if r.hour.tzinfo is None else r.hour
            out[hour] = merge(out.get(hour, empty()), json.loads(r.counts))
    return dict(sorted(out.items()))


BACKFILL_QUERY = "backfill"
"""The ``query`` of the rows :func:`backfill` writes (hours before the stream counted)."""


def backfill(session: Any, prepare: Any, alerts_by_day: Any, since: datetime, log: Any = print) -> int:
    """Counts for the hours from ``hour_of(since)`` up to the first hour the stream
    counted (that hour holds only what the stream scored), from one scan of ``scored_transactions`` and the days'
    ``alerts_by_day`` rows: for data scored before ``console_hourly`` existed. Rows are
    written whole under :data:`BACKFILL_QUERY` (a re-run rewrites them, it does not add).
    ``alerts_by_day(day)`` gives a day's alert rows (alerting.store.AlertStore). Returns
    the number of hours written."""
    first = hour_of(since)
    counted = [
        r.hour.replace(tzinfo=UTC) for r in session.execute(cql.HOURLY_ALL, timeout=120) if r.query != BACKFILL_QUERY
    ]
    if not counted:
        raise TxmonError(
            "the stream has counted no hour yet: run the upgraded stream first, since its first "
            "counted hour is where the backfill stops (else both would count the same hours)"
        )
    until = min(counted)
    hours: list[datetime] = []
    decisions: list[str | None] = []
    models: list[str | None] = []
    scan = prepare(session, cql.SCORED_HOURS)
    for r in session.execute(scan, timeout=600):
        if r.event_time is None:
            continue
        h = hour_of(r.event_time)
        if first <= h < until:
            hours.append(h)
            decisions.append(r.decision)
            models.append(r.model_version)
    raised = []
    day = day_of(first)
    while day <= day_of(until):
        for a in alerts_by_day(day):
            t = a["event_time"]
            if t is not None and first <= hour_of(t) < until:
                raised.append((t, a["reason_codes"], a["created_at"] or t))
        day += timedelta(days=1)
    per_hour = batch_counts(hours, decisions, models, raised)
    insert = prepare(session, cql.HOURLY_INSERT)
    for hour, counts in per_hour.items():
        key = (day_of(hour), hour.astimezone(UTC).replace(tzinfo=None), BACKFILL_QUERY, 0)
        session.execute(insert, (*key, BACKFILL_QUERY, *fold(None, BACKFILL_QUERY, counts)))
    log(f"{len(hours):,} scored transactions in {len(per_hour)} hour(s) before {until.isoformat()}")
    return len(per_hour)
