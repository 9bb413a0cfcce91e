"""Feature profiles in Cassandra, versioned by micro-batch for exactly-once features.

A micro-batch that fails half-way is replayed by Spark with the same input. Profiles it
already wrote carry its batch token; for those we start again from ``prev_state`` (the
profile before that batch), for the others from ``state``. Either way the replay folds
the same events onto the same starting profiles, so features come out identical.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from txmon.infra import statements as cql
from txmon.infra.cassandra_schema import rows_in, table_columns
from txmon.models.features import ProfileStore
from txmon.spark_jobs.cassandra_sink import CassandraTarget, prepared, replica_batches, retried, session_for, write_rows

_SAVE_BATCH_ROWS = 8  # a profile holds two JSON states: keep a batch well under batch_size_fail_threshold
_EPOCH = datetime(1970, 1, 1)  # noqa: DTZ001 - naive UTC, as the driver binds fastest (cassandra_sink.arrow_rows)
AGGREGATE_COLUMNS = table_columns("account_aggregates")


class CassandraProfileStore(ProfileStore):
    """Profiles in ``feature_profiles``; the account windows derived from the payer
    profiles in ``account_aggregates`` (keyed by payer, kind, start: upserts)."""

    keeps_windows = True

    def __init__(self, target: CassandraTarget, batch_token: str) -> None:
        self.target = target
        self.batch_token = batch_token
        self.session = session_for(target)
        self._base: dict[tuple[str, str], str | None] = {}
        # prev_state is read only for keys this batch token already wrote (a replay): it is
        # as large as state (24 h of JSON per key), and reading both for every key doubled
        # the bytes Cassandra served and the driver parsed (py-spy on the stream's workers).
        self._select = prepared(self.session, cql.PROFILES_IN)
        self._select_prev = prepared(self.session, cql.PROFILES_PREVIOUS_IN)
        self._insert = prepared(self.session, cql.PROFILE_INSERT)
        self._labels = prepared(self.session, cql.PAYEE_FRAUDS_IN)

    def _read(self, stmt, kind: str | None, keys: list[str]) -> list:
        # Retried while Cassandra is down (the session reconnects by itself; cassandra_sink).
        return retried(
            self.target, f"reading {len(keys)} {kind or 'label'} profiles", lambda: self._read_once(stmt, kind, keys)
        )

    def _read_once(self, stmt, kind: str | None, keys: list[str]) -> list:
        before = (kind,) if kind is not None else ()
        return rows_in(self.session, stmt, keys, before=before, in_flight=self.target.concurrency)

    def load(self, kind, keys):
        rows = self._read(self._select, kind, keys)
        # Keys this token already wrote: a replay of this micro-batch. Only this task writes
        # these keys in this batch (they are partitioned by key), so the second read sees
        # the same row as the first.
        replayed = [row.key for row in rows if row.applied_batch == self.batch_token]
        prev = {r.key: r.prev_state for r in self._read(self._select_prev, kind, replayed)} if replayed else {}
        profiles = {}
        for row in rows:
            base = prev.get(row.key) if row.applied_batch == self.batch_token else row.state
            self._base[(kind, row.key)] = base
            if base is not None:
                profiles[row.key] = base
        return profiles

    def save(self, kind, profiles):
        # lazy: cassandra (252 ms to import); txmon.spark_jobs.detection imports this module without it
        from cassandra.concurrent import execute_concurrent

        params = [(kind, key, state, self._base.get((kind, key)), self.batch_token) for key, state in profiles.items()]
        # Small UNLOGGED batches, like every other write (cassandra_sink): the Python driver
        # spends its CPU per request, and one request per profile made saving profiles the
        # largest single cost of a detection micro-batch (bench/spark_profile.py).
        batches = [(b, ()) for b in replica_batches(self.session, self._insert, params, _SAVE_BATCH_ROWS)]
        retried(
            self.target,
            f"saving {len(params)} {kind} profiles",
            lambda: execute_concurrent(
                self.session, batches, concurrency=self.target.concurrency, raise_on_first_error=True
            ),
        )

    def save_windows(self, rows):
        now = datetime.now(UTC).replace(tzinfo=None)
        write_rows(
            self.target,
            "account_aggregates",
            AGGREGATE_COLUMNS,
            [
                (
                    payer,
                    kind,
                    _EPOCH + timedelta(microseconds=start),
                    _EPOCH + timedelta(microseconds=end),
                    *values,
                    now,
                )
                for payer, kind, start, end, *values in rows
            ],
        )

    def fraud_label_times(self, payees):
        times: dict[str, list[tuple[int, int]]] = {}
        for row in self._read(self._labels, None, payees):
            labelled = _micros(row.label_time)
            # A label stored before transaction times were kept counts as made when labelled.
            made = labelled if row.event_time is None else _micros(row.event_time)
            times.setdefault(row.payee_key, []).append((labelled, made))
        return {k: sorted(v) for k, v in times.items()}


def _micros(naive_utc: datetime) -> int:
    return (naive_utc - _EPOCH) // timedelta(microseconds=1)
