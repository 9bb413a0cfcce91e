"""Ground-truth labels: kept out of events, delivered late like real chargebacks.

Fraud labels are released to the labels topic only once the simulated clock has
passed their ``label_time`` (event time + configured delay), so a consumer never sees
a label earlier than a bank would. Every label (fraud or not) also goes to a file for
offline evaluation.
"""

from __future__ import annotations

import heapq
import itertools
import json
from pathlib import Path
from typing import IO

from txmon.ingestion.events import TransactionEvent
from txmon.ingestion.producer import TransactionProducer
from txmon.ingestion.simulator import Label


class LabelReleaser:
    """Queues fraud labels and sends each when simulated time reaches its label_time."""

    def __init__(self, producer: TransactionProducer | None, file: Path | None = None) -> None:
        self.producer = producer
        self._pending: list[tuple] = []
        self._order = itertools.count()
        self._out: IO[str] | None = file.open("w", encoding="utf-8") if file else None
        self.written = 0

    def __call__(self, label: Label, event: TransactionEvent) -> None:
        if self._out is not None:
            self._out.write(json.dumps(label.to_dict(), separators=(",", ":")) + "\n")
            self.written += 1
        if label.is_fraud and self.producer is not None:
            heapq.heappush(self._pending, (label.label_time, next(self._order), label))
        while self._pending and self._pending[0][0] <= event.event_time:
            self._send(heapq.heappop(self._pending)[2])

    def _send(self, label: Label) -> None:
        assert self.producer is not None
        self.producer.send_label(label.txn_id.encode(), json.dumps(label.to_dict()).encode())

    def close(self, release_pending: bool = True) -> int:
        """Flush the file; optionally send labels not yet due (end of a finite run)."""
        pending = len(self._pending)
        if release_pending:
            while self._pending:
                self._send(heapq.heappop(self._pending)[2])
        if self._out is not None:
            self._out.close()
        return pending
