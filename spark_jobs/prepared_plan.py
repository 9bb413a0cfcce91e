"""Micro-batch plans whose arguments go to the JVM once per query, not once per micro-batch.

pyspark turns every argument of a DataFrame step into Java objects through py4j, one round
trip at a time: a Java list is filled element by element, and a ``mapInArrow`` looks up each
input column and pickles its function again. The stream's plan for one micro-batch (landing,
two feature folds, rules, both models, outputs) took ~680 round trips, 110-160 ms of the
driver's Python, on the path of every micro-batch (cProfile; docs/performance.md). None of those
arguments depend on the micro-batch: only the frame they apply to does.

:class:`PreparedPlan` has the DataFrame methods the stream's plan uses (``select``,
``withColumn``, ``withColumns``, ``drop``, ``repartition``, ``mapInArrow``, ``schema``,
``sparkSession``), so one function builds either a DataFrame (batch jobs, tests) or a prepared
plan. Each method converts its arguments once and applies itself to an empty frame of the
input schema, which gives the plan its ``schema``; calling the plan on a micro-batch's frame
replays the steps, one py4j call each.

It uses pyspark's classic internals (``DataFrame._jdf``, ``_to_seq``): pyspark is pinned in
setup.py, and tests/integration/test_prepared_plan.py checks each method against pyspark's.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.rdd import PythonEvalType
from pyspark.sql import functions as F
from pyspark.sql.pandas.functions import pandas_udf


class PreparedPlan:
    """Steps from a frame of ``schema`` to a frame of :attr:`schema`; immutable like a
    DataFrame (each method returns a new plan)."""

    def __init__(self, spark, schema, _steps: tuple = (), _template=None) -> None:
        self.sparkSession = spark
        self._steps = _steps
        self._template = _template if _template is not None else spark.createDataFrame([], schema)

    # -- what the micro-batch does -------------------------------------------------------
    def __call__(self, df):
        """This plan over ``df`` (a frame with the schema the plan was built for)."""
        # lazy: pyspark.sql.classic.dataframe (83 ms to import); the stream supervisor imports this module without it
        from pyspark.sql.classic.dataframe import DataFrame

        jdf = df._jdf
        for method, args in self._steps:
            jdf = getattr(jdf, method)(*args)
        return DataFrame(jdf, df.sparkSession)

    # -- the DataFrame methods, arguments converted once ---------------------------------
    @property
    def schema(self):
        return self._template.schema

    @property
    def columns(self) -> list[str]:
        return self._template.columns

    def _then(self, method: str, *args) -> PreparedPlan:
        # lazy: pyspark.sql.classic.dataframe (83 ms to import); the stream supervisor imports this module without it
        from pyspark.sql.classic.dataframe import DataFrame

        template = DataFrame(getattr(self._template._jdf, method)(*args), self.sparkSession)
        return PreparedPlan(self.sparkSession, None, (*self._steps, (method, args)), template)

    def _jseq(self, values, converter=None) -> object:
        """A Java Seq of ``values`` (names, or Columns with ``converter``), built once."""
        # lazy: pyspark.sql.classic.column (21 ms to import); the stream supervisor imports this module without it
        from pyspark.sql.classic.column import _to_seq

        return _to_seq(self.sparkSession.sparkContext, list(values), converter)

    def _jcols(self, cols) -> object:
        # lazy: pyspark.sql.classic.column (21 ms to import); the stream supervisor imports this module without it
        from pyspark.sql.classic.column import _to_java_column

        return self._jseq(cols, _to_java_column)

    def select(self, *cols) -> PreparedPlan:
        return self._then("select", self._jcols(cols))

    def withColumn(self, name: str, col) -> PreparedPlan:
        return self._then("withColumn", name, col._jc)

    def withColumns(self, columns: dict) -> PreparedPlan:
        return self._then("withColumns", self._jseq(columns), self._jcols(columns.values()))

    def drop(self, *names: str) -> PreparedPlan:
        return self._then("drop", self._jseq(names))

    def repartition(self, partitions: int, *cols) -> PreparedPlan:
        return self._then("repartition", partitions, self._jcols(cols))

    def mapInArrow(self, func: Callable, schema) -> PreparedPlan:
        """Like ``DataFrame.mapInArrow``: ``func`` gets every column of this plan's frame."""

        udf = pandas_udf(func, returnType=schema, functionType=PythonEvalType.SQL_MAP_ARROW_ITER_UDF)
        # By name, resolved against each micro-batch's frame (pyspark binds the template's
        # own attributes, which only the template has).
        column = udf(*[F.col(name) for name in self.columns])
        return self._then("mapInArrow", column._jc, False, None)
