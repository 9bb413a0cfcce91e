package io.txmon.scoring;

import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.broadcast.Broadcast;
import org.apache.spark.sql.Column;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.api.java.UDF1;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;

/**
 * Spark entry points for {@link TreeModels}, called from Python through py4j
 * ({@code spark_jobs/jvm_scoring.py}): broadcast an export once per model version, then
 * score with a JVM UDF, so the rows never leave the JVM for the models.
 */
public final class StreamScoring {
    /** The UDF's result: both model outputs, one evaluation per row. */
    public static final StructType SCORES = new StructType()
            .add("fraud_probability", DataTypes.DoubleType, false)
            .add("anomaly_score", DataTypes.DoubleType, false);

    private StreamScoring() {
    }

    /** Parses the export in the driver (so a bad export fails there, with its reason) and broadcasts it. */
    public static Broadcast<TreeModels> broadcast(SparkSession spark, byte[] export) {
        TreeModels models = TreeModels.fromBytes(export);
        return JavaSparkContext.fromSparkContext(spark.sparkContext()).broadcast(models);
    }

    /**
     * A struct column {@link #SCORES} of the comma-separated feature columns (cast to double;
     * null means missing, as NaN does in the Python scoring).
     */
    public static Column scores(Broadcast<TreeModels> models, String featureNames) {
        String[] names = featureNames.split(",");
        if (names.length != models.value().featureCount()) {
            throw new IllegalArgumentException("model " + models.value().version() + " scores "
                    + models.value().featureCount()
                    + " features but " + names.length + " columns were given");
        }
        Column[] columns = new Column[names.length];
        for (int i = 0; i < names.length; i++) {
            columns[i] = functions.col(names[i]).cast(DataTypes.DoubleType);
        }
        return functions.udf(new Score(models), SCORES).apply(functions.struct(columns));
    }

    static final class Score implements UDF1<Row, Row> {
        private static final long serialVersionUID = 1L;
        private final Broadcast<TreeModels> models;

        Score(Broadcast<TreeModels> models) {
            this.models = models;
        }

        @Override
        public Row call(Row features) {
            TreeModels m = models.value();
            int n = features.length();
            double[] x = new double[n];
            for (int i = 0; i < n; i++) {
                x[i] = features.isNullAt(i) ? Double.NaN : features.getDouble(i);
            }
            return RowFactory.create(m.probability(x), m.anomaly(x));
        }
    }
}
