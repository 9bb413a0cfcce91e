"""Model scoring in the JVM: the stream's rows never cross to Python for the models.

The champion bundle's two tree ensembles are exported as flat arrays
(models/tree_export.py), parsed and broadcast by the JVM once per model version, and
evaluated by a Java UDF (spark_jobs/jvm/io/txmon/scoring/TreeModels.java) inside the
same Spark stage as the rules. Risk and decision are Spark SQL columns
(:func:`models.risk.risk_column`, :func:`models.risk.decision_column`). Only reasons
and alerts stay in Python, built in the write step for the few rows that need them.

Why: moving a batch JVM -> Arrow -> Python -> JVM costs more than the two models
themselves (bench/stream_scoring_bench.py: the pass-through floor alone was 0.35-0.65
of both models' plain scikit-learn calls), so Python scoring could not reach the
in-stream / plain-predict goal of 0.5 (docs/detection.md, "Scoring in the JVM").
"""

from __future__ import annotations

from txmon.models.features import FEATURES
from txmon.models.tree_export import tree_bytes

__all__ = ["broadcast_trees", "with_model_scores"]


def broadcast_trees(spark, bundle, version: str):
    """The bundle's trees as a JVM broadcast (``Broadcast<TreeModels>``; ``.unpersist()``
    when replaced). Raises models.tree_export.UnsupportedModelError for a bundle the JVM
    scorer cannot evaluate exactly, and py4j's error if the JVM rejects the export."""
    data = tree_bytes(bundle, version)
    jvm = spark.sparkContext._jvm
    return jvm.io.txmon.scoring.StreamScoring.broadcast(spark._jsparkSession, bytearray(data))


def model_scores_column(trees, spark):
    """The struct column (fraud_probability, anomaly_score) of both models over FEATURES."""
    # pyspark on first use, as in spark_jobs/detection.py.
    from pyspark.sql import Column

    return Column(spark.sparkContext._jvm.io.txmon.scoring.StreamScoring.scores(trees, ",".join(FEATURES)))


def with_model_scores(df, trees, spark=None):
    """``df`` (a DataFrame or a PreparedPlan) plus ``fraud_probability`` and
    ``anomaly_score`` (doubles in [0, 1]).

    ``trees``: a :func:`broadcast_trees` result, or None (no model: both 0.0, as the
    Python scoring did without a bundle)."""
    # lazy: pyspark (747 ms to import); the scoring API imports this module without it
    from pyspark.sql import functions as F

    if trees is None:
        return df.withColumns({"fraud_probability": F.lit(0.0), "anomaly_score": F.lit(0.0)})
    scores = model_scores_column(trees, spark or df.sparkSession)
    # One UDF call per row: the struct is not inlined into both field reads (Spark's
    # CollapseProject keeps a UDF referenced twice in its own projection).
    return (
        df.withColumn("_model_scores", scores)
        .withColumns(
            {
                "fraud_probability": F.col("_model_scores.fraud_probability"),
                "anomaly_score": F.col("_model_scores.anomaly_score"),
            }
        )
        .drop("_model_scores")
    )
