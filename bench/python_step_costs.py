"""Per-row Python cost of the stream's two Python steps, for this tree and another checkout.

The landing step (the contract's verdict plus the typed columns) and the feature fold run in
Spark's Python workers; their per-row cost moves the stream's sustained rate. This times
both in one process on the same simulated events (30,000, seed 3; best of three), so two
trees can be compared in one run without starting the stack:

    .venv/bin/python bench/python_step_costs.py                # this tree
    .venv/bin/python bench/python_step_costs.py /path/to/other/checkout
"""
import sys, time, json
root = sys.argv[1] if len(sys.argv) > 1 else str(__import__("pathlib").Path(__file__).resolve().parents[1])
sys.path.insert(0, root)
from txmon.ingestion.simulator import Simulator, SimulatorConfig
from txmon.models.features import add_features, MemoryProfileStore, transactions_frame
from txmon.ingestion.events import to_json, validate_event
items = [i.event for i in Simulator(SimulatorConfig(n_customers=3000), seed=3).generate(30000)]
frame = transactions_frame(items)
best = 1e9
for _ in range(3):
    t = time.perf_counter(); add_features(frame.copy(), MemoryProfileStore()); best = min(best, time.perf_counter() - t)
print(root, "features us/row", round(best / len(frame) * 1e6, 1))
raws = [to_json(e) for e in items]
from datetime import datetime, timezone
now = datetime.now(timezone.utc)
best = 1e9
for _ in range(3):
    t = time.perf_counter()
    for r in raws: validate_event(r, now=now)
    best = min(best, time.perf_counter() - t)
print(root, "validate_event us/row", round(best / len(raws) * 1e6, 1))
try:
    import pyarrow as pa
    from txmon.spark_jobs import validation
    if hasattr(validation, "judge_batch"):
        batch = pa.RecordBatch.from_pydict({"key": pa.array([b"k"]*len(raws), pa.binary()), "value": pa.array(raws, pa.binary()),
            "topic": pa.array(["t"]*len(raws)), "partition": pa.array([0]*len(raws), pa.int32()),
            "offset": pa.array(range(len(raws)), pa.int64()), "kafka_ts": pa.array([now]*len(raws), pa.timestamp("us", tz="UTC"))})
        best = 1e9
        for _ in range(3):
            t = time.perf_counter(); validation.judge_batch(batch, now, validation.Judge()); best = min(best, time.perf_counter() - t)
        print(root, "judge_batch (validate + typed columns) us/row", round(best / len(raws) * 1e6, 1))
    else:
        batch = pa.RecordBatch.from_pydict({"value": pa.array([r.decode() for r in raws])})
        best = 1e9
        for _ in range(3):
            t = time.perf_counter(); validation.with_verdicts(batch); best = min(best, time.perf_counter() - t)
        print(root, "with_verdicts (validate only) us/row", round(best / len(raws) * 1e6, 1))
except Exception as e:
    print("err", e)
