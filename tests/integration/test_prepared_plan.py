"""spark_jobs/prepared_plan.py: a plan built once gives, on every frame it is applied to,
what pyspark's own DataFrame methods give."""

from __future__ import annotations

import pytest

from txmon.spark_jobs.prepared_plan import PreparedPlan

pytestmark = pytest.mark.integration


def _frame(spark, rows):
    return spark.createDataFrame(rows, "account string, amount long, city string")


def _steps(df):
    """The same chain for a DataFrame or a PreparedPlan: every method the plan has."""
    from pyspark.sql import functions as F

    def doubled(batches):
        import pyarrow.compute as pc

        for batch in batches:
            yield batch.set_column(
                batch.schema.get_field_index("amount"), "amount", pc.multiply(batch.column("amount"), 2)
            )

    df = df.select("account", F.col("amount").alias("amount"), F.upper("city").alias("city"))
    df = df.withColumn("big", F.col("amount") >= 100)
    df = df.withColumns({"tag": F.concat("account", F.lit("/"), "city"), "one": F.lit(1)})
    df = df.repartition(3, "account").mapInArrow(doubled, df.schema)
    return df.drop("one")


def _sorted(df):
    return sorted(tuple(r) for r in df.collect())


def test_a_plan_built_once_equals_the_dataframe_chain_on_every_frame(services, spark):
    first = _frame(spark, [("A1", 50, "pune"), ("A2", 150, "delhi"), ("A1", 100, None)])
    second = _frame(spark, [("B7", 7, "goa"), ("B8", 700, "agra")])
    plan = _steps(PreparedPlan(spark, first.schema))

    assert plan.schema == _steps(first).schema
    assert plan.columns == ["account", "amount", "city", "big", "tag"]
    for frame in (first, second, first):  # one plan, several frames, in any order
        assert _sorted(plan(frame)) == _sorted(_steps(frame))
    assert _sorted(plan(second)) == [("B7", 14, "GOA", False, "B7/GOA"), ("B8", 1400, "AGRA", True, "B8/AGRA")]
    assert plan(first).rdd.getNumPartitions() == 3


def test_a_frame_without_a_column_the_plan_needs_is_an_analysis_error(services, spark):
    from pyspark.errors import AnalysisException

    plan = _steps(PreparedPlan(spark, _frame(spark, []).schema))
    wrong = spark.createDataFrame([("A1", 5)], "account string, amount long")
    with pytest.raises(AnalysisException, match="city"):
        plan(wrong)
