"""Per-row Python cost of the stream's two Python steps, for this tree and another checkout.

The landing step (the contract's verdict plus the typed columns) and the feature fold run in
Spark's Python workers; their per-row cost moves the stream's sustained rate. This times
both in one process on the same simulated events (30,000, seed 3; best of three), so two
trees can be compared in one run without starting the stack:

    .venv/bin/python bench/python_step_costs.py                # this tree
    .venv/bin/python bench/python_step_costs.py /path/to/other/checkout
"""

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path


def _best_of_three(step: Callable[[], object]) -> float:
    best = 1e9
    for _ in range(3):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    root = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[1])
    sys.path.insert(0, root)
    # Imported once the tree to time is first on the path.
    import pyarrow as pa

    from txmon.ingestion.events import to_json, validate_event
    from txmon.ingestion.simulator import Simulator, SimulatorConfig
    from txmon.models.features import MemoryProfileStore, add_features, transactions_frame
    from txmon.spark_jobs import validation

    items = [i.event for i in Simulator(SimulatorConfig(n_customers=3000), seed=3).generate(30000)]
    frame = transactions_frame(items)
    best = _best_of_three(lambda: add_features(frame.copy(), MemoryProfileStore()))
    print(root, "features us/row", round(best / len(frame) * 1e6, 1))

    raws = [to_json(e) for e in items]
    now = datetime.now(UTC)

    def validate_all() -> None:
        for raw in raws:
            validate_event(raw, now=now)

    best = _best_of_three(validate_all)
    print(root, "validate_event us/row", round(best / len(raws) * 1e6, 1))

    n = len(raws)
    if hasattr(validation, "judge_batch"):
        batch = pa.RecordBatch.from_pydict(
            {
                "key": pa.array([b"k"] * n, pa.binary()),
                "value": pa.array(raws, pa.binary()),
                "topic": pa.array(["t"] * n),
                "partition": pa.array([0] * n, pa.int32()),
                "offset": pa.array(range(n), pa.int64()),
                "kafka_ts": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
            }
        )
        best = _best_of_three(lambda: validation.judge_batch(batch, now, validation.Judge()))
        print(root, "judge_batch (validate + typed columns) us/row", round(best / n * 1e6, 1))
    else:  # an older checkout
        values = pa.RecordBatch.from_pydict({"value": pa.array([r.decode() for r in raws])})
        best = _best_of_three(lambda: validation.with_verdicts(values))
        print(root, "with_verdicts (validate only) us/row", round(best / n * 1e6, 1))


if __name__ == "__main__":
    main()
