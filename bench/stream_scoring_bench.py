"""In-Spark scoring throughput against plain ``predict_proba``, measured in the same run.

The stream scores in the JVM: both models' trees broadcast once per version and
evaluated by a Java UDF, risk and decision as Spark SQL columns
(spark_jobs/jvm_scoring.py, detection.score_ruled); reasons and alerts are built in
Python, in the write step, for the few rows that need them. This bench times, on the
same feature rows:

* ``predict_proba`` of the bare classifier on one NumPy matrix (baseline 1: one model);
* plain scikit-learn calls of BOTH models the stream scores with, ``predict_proba`` of
  the classifier and ``score_samples`` of the Isolation Forest pipeline (baseline 2: the
  fair "plain model.predict" for a stream that runs two models);
* ``bundle.score`` on one pandas frame (the stream's own model code in-process, one
  thread: classifier + calibration + the forest through models.bundle.ForestPaths);
* Spark ``mapInArrow`` over the feature columns of a cached DataFrame (``local[2]``)
  returning the two scores, once with the plain scikit-learn calls and once with
  ``bundle.score`` (the models alone inside Spark);
* Spark ``mapInArrow`` passing the ruled batch through Python untouched (the transfer
  floor: what any Python step returning the batch's columns costs before doing work;
  why the scoring moved to the JVM);
* Spark reading the same cached rows into the ``noop`` sink with no scoring at all
  (Spark's own floor: no in-Spark path can be faster);
* the stream's scoring step: both models, risk and decision, in the JVM (the goal's
  ratio is this one's);
* that step followed by the Python reasons/alert-JSON code of the stream's write step,
  in a pass-through ``mapInArrow`` (in the stream it rides in the write step's own
  transfer, so this overstates its cost by about the floor).

    .venv/bin/python bench/stream_scoring_bench.py [--rows 100000] [--against 781adfb] [--arrow-batch 1000]

Goal: in-stream scoring / plain predict >= 0.5. Every path is reported against
baselines 1 and 2 (and bundle.score); the in-process baselines run on one thread, the
Spark paths on ``local[2]`` sharing the machine's cores with the JVM.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from txmon.infra.settings import load_settings
from txmon.models.features import FEATURES

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
PLAIN_BOTH = "predict_proba + IF score_samples (sklearn, 1 thread)"
BUNDLE = "bundle.score (pandas, 1 thread)"
SPARK_PLAIN = "Spark mapInArrow, features -> predict_proba + score_samples"
SPARK_BUNDLE = "Spark mapInArrow, features -> bundle.score"
TRANSFER = "Spark mapInArrow pass-through, no scoring (floor)"
SCAN_FLOOR = "Spark noop over the ruled frame, no scoring (Spark's own floor)"
IN_STREAM = "Spark scoring step in the JVM (both models, risk, decision)"
WITH_REASONS = "JVM scoring + Python reasons/alerts (pass-through mapInArrow)"


def measure(spark, bundle, frame, repeats: int = 3) -> dict[str, float]:
    """rows/s of each scoring path on the same feature rows (``frame``: :func:`scoring_frame`).

    Importable: the pipeline benchmark (bench/pipeline_bench.py) reports these in its run.
    """
    # lazy: pandas (3.2 s to import); the bench's producer child imports this module
    from threadpoolctl import threadpool_limits

    from txmon.models.bundle import feature_matrix
    from txmon.models.rules import load_rules
    from txmon.spark_jobs.detection import score_ruled
    from txmon.spark_jobs.jvm_scoring import broadcast_trees
    from txmon.spark_jobs.rules import apply_rules

    features = frame[list(FEATURES)]
    matrix = feature_matrix(features)
    n = len(frame)
    results = {}
    with threadpool_limits(1):  # as in a Spark Python worker (OMP_NUM_THREADS=1)
        results[PREDICT] = n / _best(lambda: bundle.classifier.predict_proba(matrix), repeats)
        results[PLAIN_BOTH] = n / _best(
            lambda: (bundle.classifier.predict_proba(matrix), bundle.anomaly_model.score_samples(matrix)), repeats
        )
        results[BUNDLE] = n / _best(lambda: bundle.score(features), repeats)

    sdf = _spark_frame(spark, frame).cache()
    sdf.count()
    bc = spark.sparkContext.broadcast(bundle)

    def models_only(plain: bool):
        def run(batches):
            # lazy: pyarrow (66 ms to import); the bench's producer child imports this module
            import pyarrow as pa

            model = bc.value
            for batch in batches:
                if plain:  # both models' own scikit-learn calls, as before models.bundle.ForestPaths
                    x = feature_matrix(batch)
                    p, a = model.classifier.predict_proba(x)[:, 1], -model.anomaly_model.score_samples(x)
                else:
                    p, a = model.score(batch)
                yield pa.RecordBatch.from_arrays([pa.array(p), pa.array(a)], names=["p", "a"])

        return run

    # Models only: the feature columns in, two columns out (no pass-through, no risk/reasons).
    feats = sdf.select(*FEATURES)
    results[SPARK_PLAIN] = n / _best(
        lambda: feats.mapInArrow(models_only(True), "p double, a double").write.format("noop").mode("overwrite").save(),
        repeats,
    )
    results[SPARK_BUNDLE] = n / _best(
        lambda: (
            feats.mapInArrow(models_only(False), "p double, a double").write.format("noop").mode("overwrite").save()
        ),
        repeats,
    )

    rules = load_rules()
    ruled = apply_rules(sdf, rules).cache()
    ruled.count()

    def pass_through(batches):
        yield from batches

    # The floor of any Python step that returns the batch's columns (as mapInArrow must):
    # Arrow out of the JVM and back, no work in Python.
    results[TRANSFER] = n / _best(
        lambda: ruled.mapInArrow(pass_through, ruled.schema).write.format("noop").mode("overwrite").save(), repeats
    )
    # What Spark costs with no scoring at all: reading the cached rows into the noop sink.
    # No in-Spark step can beat it, so it bounds every ratio from above.
    results[SCAN_FLOOR] = n / _best(lambda: ruled.write.format("noop").mode("overwrite").save(), repeats)
    trees = broadcast_trees(spark, bundle, "bench")
    scored = score_ruled(ruled, trees, "bench", rules, spark, bundle.risk_policy(rules.policy))
    results[IN_STREAM] = n / _best(lambda: scored.write.format("noop").mode("overwrite").save(), repeats)
    results[WITH_REASONS] = n / _best(
        lambda: (
            scored.mapInArrow(_explaining(bc, rules), _explained_schema(scored.schema))
            .write.format("noop")
            .mode("overwrite")
            .save()
        ),
        repeats,
    )
    sdf.unpersist()
    ruled.unpersist()
    bc.destroy()
    trees.destroy()
    return results


def _explained_schema(schema):
    # lazy: pyspark (751 ms to import); the bench's producer child imports this module
    from pyspark.sql import types as T

    return T.StructType(
        [*schema.fields, T.StructField("reasons", T.StringType()), T.StructField("alert_json", T.StringType())]
    )


def _explaining(bundle_bc, ruleset):
    """mapInArrow function: the write step's reasons/alerts code (detection.with_explanations)
    on a JVM-scored batch, the batch passed through with the two columns added."""

    # lazy: pandas (3.2 s to import); the bench's producer child imports this module
    from txmon.spark_jobs.detection import with_explanations

    rules = {r.id: r for r in ruleset.rules}

    def run(batches):
        bundle = bundle_bc.value
        for batch in batches:
            # Any key: the bench times the masking, it publishes nothing.
            yield with_explanations(
                batch, bundle, rules, "bench", ruleset.label, datetime.now(UTC), b"bench-only-pii-token-key-0123456789"
            )

    return run


def detection_at(ref: str):
    """spark_jobs/detection.py as of git ``ref``, importable on Spark workers (by value)."""

    # lazy: pyspark (751 ms to import); the bench's producer child imports this module
    from pyspark import cloudpickle

    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "show", f"{ref}:spark_jobs/detection.py"], cwd=root, check=True, capture_output=True, text=True
    ).stdout
    name = f"detection_{ref.replace('-', '_').replace('~', '_')}"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None  # always, without a loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    exec(compile(source, f"{ref}:spark_jobs/detection.py", "exec"), module.__dict__)
    cloudpickle.register_pickle_by_value(module)
    return module


def compare_steps(spark, bundle, frame, ref: str, repeats: int = 3) -> dict:
    """The Python scoring step of git ``ref`` (``_score_partition``, before scoring moved to
    the JVM) against the working tree's JVM scoring, same rows, interleaved; also how far
    their scores are apart and whether risk and decision agree on every row."""

    # lazy: pandas (3.2 s to import); the bench's producer child imports this module
    import numpy as np

    from txmon.models.rules import load_rules
    from txmon.spark_jobs.detection import score_ruled
    from txmon.spark_jobs.jvm_scoring import broadcast_trees
    from txmon.spark_jobs.rules import apply_rules

    old = detection_at(ref)
    if not hasattr(old, "_score_partition"):
        raise SystemExit(f"{ref} has no Python scoring step (detection._score_partition); pick an older commit")
    rules = load_rules()
    ruled = apply_rules(_spark_frame(spark, frame), rules).cache()
    n = ruled.count()
    bc = spark.sparkContext.broadcast(bundle)
    trees = broadcast_trees(spark, bundle, "bench")
    schema = old.scored_schema(ruled.schema)
    steps = {
        ref: lambda: ruled.mapInArrow(old._score_partition(bc, "bench", rules, schema), schema),
        "working tree (JVM)": lambda: score_ruled(
            ruled, trees, "bench", rules, spark, bundle.risk_policy(rules.policy)
        ),
    }
    cols = ["txn_id", "fraud_probability", "anomaly_score", "risk_score", "decision"]
    a, b = (step().select(*cols).toPandas().set_index("txn_id").sort_index() for step in steps.values())
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step().write.format("noop").mode("overwrite").save()
            times[name].append(time.perf_counter() - t0)
    ruled.unpersist()
    return {
        "rows": n,
        "max |probability difference|": float(np.max(np.abs(a.fraud_probability - b.fraud_probability))),
        "max |anomaly difference|": float(np.max(np.abs(a.anomaly_score - b.anomaly_score))),
        "risk and decision identical": bool(a.risk_score.equals(b.risk_score) and a.decision.equals(b.decision)),
        **{f"{name} rows/s": n / statistics.median(ts) for name, ts in times.items()},
    }


def _spark_frame(spark, frame):
    # The transaction columns the committed rules read (channel, txn_type, mcc, ...) and the features.
    cols = [
        "txn_id",
        "payer_account",
        "payee_account",
        "payee_vpa",
        "payer_vpa",
        "amount_paise",
        "channel",
        "txn_type",
        "mcc",
        "event_time",
        *[c for c in FEATURES if c != "amount_paise"],
    ]
    pdf = frame.reindex(columns=cols)
    for name in ("payer_vpa", "payee_account", "payee_vpa", "channel", "txn_type", "mcc"):
        pdf[name] = pdf[name].astype(object).where(pdf[name].notna(), None)
    pdf["event_time"] = pdf["event_time"].dt.tz_localize(None)
    return spark.createDataFrame(pdf).repartition(2)


def ratios(results: dict[str, float]) -> dict[str, float]:
    """The goal's ratios of this run: in-stream scoring over each plain baseline."""
    return {
        "in-stream scoring / plain predict_proba": results[IN_STREAM] / results[PREDICT],
        "in-stream scoring / plain predict_proba + IF score_samples": results[IN_STREAM] / results[PLAIN_BOTH],
        "in-stream scoring / bundle.score in-process": results[IN_STREAM] / results[BUNDLE],
    }


def format_results(results: dict[str, float]) -> str:
    heads = ("vs proba", "vs both", "vs bundle")
    bases = (results[PREDICT], results[PLAIN_BOTH], results[BUNDLE])
    lines = [f"{'path':<62}{'rows/s':>11}" + "".join(f"{h:>11}" for h in heads)]
    lines += [
        f"{name:<62}{rate:>11,.0f}" + "".join(f"{rate / b:>11.2f}" for b in bases) for name, rate in results.items()
    ]
    lines += [
        f"{name}: {value:.3f} ({'meets' if value >= 0.5 else 'misses'} the 0.5 goal)"
        for name, value in ratios(results).items()
    ]
    return "\n".join(lines)


def main() -> None:
    # lazy: pandas (3.1 s to import); the bench's producer child imports this module
    from txmon.bench.scoring_bench import load_or_train, scoring_frame
    from txmon.spark_jobs.session import build_session

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="feature rows to score")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--against",
        metavar="GIT_REF",
        help="also time the Python scoring step of spark_jobs/detection.py at this commit (one "
        "before the JVM scorer, e.g. 86e7fda) against the working tree's JVM scoring (same "
        "rows, interleaved) and compare their scores and decisions",
    )
    parser.add_argument(
        "--arrow-batch",
        type=int,
        metavar="ROWS",
        help="spark.sql.execution.arrow.maxRecordsPerBatch for the Spark paths [Spark's default, "
        "10,000]; the stream's batches are a micro-batch's rows per partition, often < 1,000",
    )
    args = parser.parse_args()

    bundle, described = load_or_train(None, 100_000, 42)
    frame = scoring_frame(args.rows, args.seed)
    spark = build_session(load_settings(), "stream-scoring-bench")
    if args.arrow_batch:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(args.arrow_batch))
    results = measure(spark, bundle, frame, args.repeats)
    arrow_batch = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    print(
        f"model: {described}; {len(frame):,} rows; Arrow batches of {arrow_batch} rows; machine: {os.cpu_count()} cores, "
        f"loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(format_results(results))
    if args.against:
        cmp = compare_steps(spark, bundle, frame, args.against, args.repeats)
        before, after = cmp[f"{args.against} rows/s"], cmp["working tree (JVM) rows/s"]
        print(
            f"scoring step, {cmp['rows']:,} rows: {args.against} (Python) {before:,.0f} rows/s, working tree "
            f"(JVM) {after:,.0f} rows/s ({after / before:.2f}x)"
        )
        print("; ".join(f"{k}: {v}" for k, v in cmp.items() if "rows" not in k))


if __name__ == "__main__":
    main()
