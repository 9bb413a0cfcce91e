"""In-Spark scoring throughput against plain ``predict_proba``, measured in the same run.

The stream scores with ``mapInArrow`` and the model bundle broadcast once
(spark_jobs/detection.py). This bench times, on the same feature rows:

* ``predict_proba`` of the bare classifier on one NumPy matrix (the baseline);
* ``bundle.score`` on one pandas frame (classifier + calibration + Isolation Forest);
* Spark ``mapInArrow`` running ``bundle.score`` on a cached DataFrame (``local[2]``);
* the stream's full scoring step (risk, decision, reasons, alert JSON) in ``mapInArrow``.

    .venv/bin/python bench/stream_scoring_bench.py [--rows 100000]

Goal (issue 4): in-stream scoring / plain predict >= 0.5.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _best(fn, repeats: int = 3) -> float:
    fn()  # warm-up: broadcast, Python workers, JIT
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


PREDICT = "predict_proba (NumPy, 1 thread)"
IN_STREAM = "Spark full scoring step (risk, reasons, alerts)"


def measure(spark, bundle, frame, repeats: int = 3) -> dict[str, float]:
    """rows/s of each scoring path on the same feature rows (``frame``: :func:`scoring_frame`).

    Importable: the pipeline benchmark (bench/pipeline_bench.py) reports these in its run.
    """
    from threadpoolctl import threadpool_limits

    from models.bundle import feature_matrix
    from pyspark.sql import types as T
    from spark_jobs.detection import _score_partition, scored_schema
    from spark_jobs.features import FEATURES
    from spark_jobs.rules import apply_rules, load_rules

    features = frame[list(FEATURES)]
    matrix = feature_matrix(features)
    n = len(frame)
    results = {}
    with threadpool_limits(1):  # as in a Spark Python worker (OMP_NUM_THREADS=1)
        results[PREDICT] = n / _best(lambda: bundle.classifier.predict_proba(matrix), repeats)
        results["bundle.score (pandas, 1 thread)"] = n / _best(lambda: bundle.score(features), repeats)

    cols = ["txn_id", "payer_account", "payee_account", "payee_vpa", "payer_vpa", "amount_paise", "channel",
            "txn_type", "event_time", *[c for c in FEATURES if c != "amount_paise"]]
    pdf = frame.reindex(columns=cols)
    for name in ("payer_vpa", "payee_account", "payee_vpa", "channel", "txn_type"):
        pdf[name] = pdf[name].astype(object).where(pdf[name].notna(), None)
    pdf["event_time"] = pdf["event_time"].dt.tz_localize(None)
    sdf = spark.createDataFrame(pdf).repartition(2).cache()
    sdf.count()
    bc = spark.sparkContext.broadcast(bundle)

    def score_only(batches):
        import pyarrow as pa

        model = bc.value
        for batch in batches:
            p, a = model.score(batch.to_pandas()[list(FEATURES)])
            yield pa.RecordBatch.from_arrays([pa.array(p), pa.array(a)], names=["p", "a"])

    results["Spark mapInArrow bundle.score (local[2])"] = n / _best(
        lambda: sdf.mapInArrow(score_only, "p double, a double").write.format("noop").mode("overwrite").save(),
        repeats)

    rules = load_rules()
    ruled = apply_rules(sdf, rules).cache()
    ruled.count()
    out_schema = scored_schema(ruled.schema)
    step = _score_partition(bc, "bench", rules, out_schema)
    results[IN_STREAM] = n / _best(
        lambda: ruled.mapInArrow(step, out_schema).write.format("noop").mode("overwrite").save(), repeats)
    sdf.unpersist()
    ruled.unpersist()
    bc.destroy()
    return results


def format_results(results: dict[str, float]) -> str:
    base = results[PREDICT]
    lines = [f"{'path':<52}{'rows/s':>12}{'vs predict':>12}"]
    lines += [f"{name:<52}{rate:>12,.0f}{rate / base:>12.2f}" for name, rate in results.items()]
    return "\n".join(lines)


def main() -> None:
    import os

    from bench.scoring_bench import load_or_train, scoring_frame
    from infra.settings import load_settings
    from spark_jobs.session import build_session

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="feature rows to score")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    bundle, described = load_or_train(None, 100_000, 42)
    frame = scoring_frame(args.rows, args.seed)
    spark = build_session(load_settings(), "stream-scoring-bench")
    results = measure(spark, bundle, frame, args.repeats)
    print(f"model: {described}; {len(frame):,} rows; machine: {os.cpu_count()} cores, "
          f"loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(format_results(results))


if __name__ == "__main__":
    main()
