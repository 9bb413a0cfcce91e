package io.txmon.scoring;

import java.io.ByteArrayInputStream;
import java.io.DataInputStream;
import java.io.IOException;
import java.io.Serializable;

/**
 * The model bundle's tree ensembles and linear model, evaluated in the JVM (no Python round trip).
 *
 * <p>Built from the flat arrays {@code models/tree_export.py} writes (big-endian, see
 * {@link #fromBytes}). Each method repeats, step for step, the float operations of the
 * Python scoring it replaces ({@code models/bundle.py}):
 * <ul>
 *   <li>{@link #probability}: HistGradientBoostingClassifier's raw prediction (baseline plus
 *   each tree's leaf value, summed in tree order; a NaN feature follows the node's
 *   missing-values direction), then the Platt sigmoid {@code 1 / (1 + exp(-(a * raw + b)))},
 *   blended with the logistic regression's and the random forest's probabilities (each
 *   leaf's fraud share, summed in tree order and divided by the number of trees) at their
 *   weights;
 *   <li>{@link #anomaly}: the Isolation Forest's {@code 2 ** -(depth sum / denominator)}
 *   (its input transform, float32 {@code sign(x) * log1p(|x|)}, is folded into the
 *   exported thresholds), then numpy's {@code interp} against the training reference.
 * </ul>
 * Sums and comparisons are bit-identical to scikit-learn's; {@code exp} and {@code pow}
 * are Java's, which may differ from the C library's in the last bit
 * (tests/integration/test_jvm_scoring.py bounds the difference and checks decisions match).
 */
public final class TreeModels implements Serializable {
    private static final long serialVersionUID = 1L;
    private static final int MAGIC = 0x54584d31; // "TXM1"

    private final int nFeatures;
    private final String version;
    private final double baseline;
    private final double plattA;
    private final double plattB;
    private final Trees classifier;
    private final double denominator;
    private final Trees forest;
    private final double[] referenceX;
    private final double[] referenceY;
    // The blended logistic regression (models.bundle.LinearPart): weight 0 when there is none.
    private final double linearWeight;
    private final double[] linearFill;
    private final double[] linearMean;
    private final double[] linearScale;
    private final double[] linearCoef;
    private final double linearIntercept;
    // The blended random forest (models.bundle.ForestPart): weight 0 and no trees when there is none.
    private final double forestWeight;
    private final Trees blendedForest;

    /**
     * An ensemble's trees, all nodes in one set of arrays. {@code feature < 0} marks a
     * leaf, whose {@code value} is the tree's output (a boosting leaf value, or a forest
     * leaf's path length + c(n) - 1). Children are interleaved (left, right): one cache
     * line for both.
     */
    private static final class Trees implements Serializable {
        private static final long serialVersionUID = 1L;
        private static final int LANES = 4;
        final int[] roots;
        final int[] depth;
        final int[] feature;
        final double[] threshold;
        final boolean[] missingLeft;
        final int[] children;
        final double[] value;

        Trees(DataInputStream in) throws IOException {
            int trees = in.readInt();
            roots = new int[trees];
            int n = 0;
            for (int t = 0; t < trees; t++) {
                roots[t] = n;
                n += in.readInt();
            }
            feature = new int[n];
            threshold = new double[n];
            missingLeft = new boolean[n];
            children = new int[2 * n];
            value = new double[n];
            for (int i = 0; i < n; i++) feature[i] = in.readInt();
            for (int i = 0; i < n; i++) threshold[i] = in.readDouble();
            for (int i = 0; i < n; i++) missingLeft[i] = in.readBoolean();
            for (int side = 0; side < 2; side++) {
                for (int i = 0; i < n; i++) children[2 * i + side] = in.readInt();
            }
            for (int i = 0; i < n; i++) value[i] = in.readDouble();
            for (int t = 0; t < trees; t++) {
                int end = t + 1 < trees ? roots[t + 1] : n;
                for (int i = roots[t]; i < end; i++) {
                    if (feature[i] >= 0) {  // per-tree child indexes -> indexes into the shared arrays
                        children[2 * i] += roots[t];
                        children[2 * i + 1] += roots[t];
                    } else {  // a leaf steps to itself, so a walk can take more steps than its path
                        feature[i] = 0;
                        children[2 * i] = i;
                        children[2 * i + 1] = i;
                        threshold[i] = Double.NaN;
                    }
                }
            }
            depth = new int[trees];
            for (int t = 0; t < trees; t++) depth[t] = depthOf(roots[t]);
        }

        private int depthOf(int node) {
            if (children[2 * node] == node) return 0;
            return 1 + Math.max(depthOf(children[2 * node]), depthOf(children[2 * node + 1]));
        }

        /** One step down from {@code node}. NaN goes the node's missing-values way. */
        private int step(int node, double[] x) {
            double v = x[feature[node]];
            if (v != v) return children[2 * node + (missingLeft[node] ? 0 : 1)];
            // Right iff v > threshold, read from the sign bit of (threshold - v) instead of a
            // branch: exact (a finite difference has the sign of the true one, and is +0.0 only
            // when equal), and a random row's path is a coin toss no branch predictor can learn.
            int right = (int) (Double.doubleToRawLongBits(threshold[node] - v) >>> 63);
            return children[2 * node + right];
        }

        /** {@code start} plus each tree's leaf value, added in tree order, one tree at a time
         * down its own path with plain branches (for gradient boosting's shallow, unbalanced
         * trees, whose splits the branch predictor mostly learns: measured 2x faster here
         * than the branch-free {@link #step}). */
        double sum(double[] x, double start) {
            double total = start;
            for (int root : roots) {
                int node = root;
                while (children[2 * node] != node) {
                    double v = x[feature[node]];
                    boolean left = v != v ? missingLeft[node] : v <= threshold[node];
                    node = left ? children[2 * node] : children[2 * node + 1];
                }
                total += value[node];
            }
            return total;
        }

        /**
         * {@link #sum}, four trees walked in lockstep for their deepest one's depth (leaves
         * step to themselves): the four chains of dependent loads overlap instead of running
         * one after the other. For trees whose leaves are mostly at the same depth (the
         * Isolation Forest's); unbalanced trees would waste steps.
         */
        double sumLockstep(double[] x, double start) {
            double total = start;
            int trees = roots.length;
            int t = 0;
            for (; t + LANES <= trees; t += LANES) {
                int a = roots[t], b = roots[t + 1], c = roots[t + 2], d = roots[t + 3];
                int steps = Math.max(Math.max(depth[t], depth[t + 1]), Math.max(depth[t + 2], depth[t + 3]));
                for (int k = 0; k < steps; k++) {
                    a = step(a, x);
                    b = step(b, x);
                    c = step(c, x);
                    d = step(d, x);
                }
                total += value[a];
                total += value[b];
                total += value[c];
                total += value[d];
            }
            for (; t < trees; t++) {
                int node = roots[t];
                for (int k = 0; k < depth[t]; k++) node = step(node, x);
                total += value[node];
            }
            return total;
        }
    }

    private TreeModels(DataInputStream in) throws IOException {
        if (in.readInt() != MAGIC) {
            throw new IOException("not a txmon tree-model export (bad magic); re-export with models/tree_export.py");
        }
        version = in.readUTF();
        nFeatures = in.readInt();
        baseline = in.readDouble();
        plattA = in.readDouble();
        plattB = in.readDouble();
        classifier = new Trees(in);
        denominator = in.readDouble();
        forest = new Trees(in);
        int nRef = in.readInt();
        referenceX = new double[nRef];
        referenceY = new double[nRef];
        for (int i = 0; i < nRef; i++) referenceX[i] = in.readDouble();
        for (int i = 0; i < nRef; i++) referenceY[i] = in.readDouble();
        linearWeight = in.readDouble();
        linearFill = readDoubles(in, nFeatures);
        linearMean = readDoubles(in, nFeatures);
        linearScale = readDoubles(in, nFeatures);
        linearCoef = readDoubles(in, nFeatures);
        linearIntercept = in.readDouble();
        forestWeight = in.readDouble();
        blendedForest = new Trees(in);
        if (in.readInt() != MAGIC) {
            throw new IOException("tree-model export is truncated or from another format version");
        }
    }

    private static double[] readDoubles(DataInputStream in, int n) throws IOException {
        double[] out = new double[n];
        for (int i = 0; i < n; i++) out[i] = in.readDouble();
        return out;
    }

    /** Parses an export; the error names what is wrong. */
    public static TreeModels fromBytes(byte[] data) {
        try (DataInputStream in = new DataInputStream(new ByteArrayInputStream(data))) {
            return new TreeModels(in);
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot read tree-model export: " + e.getMessage(), e);
        }
    }

    public int featureCount() {
        return nFeatures;
    }

    public String version() {
        return version;
    }

    /** Calibrated fraud probability of one row of FEATURES (NaN = missing). */
    public double probability(double[] x) {
        double raw = classifier.sum(x, baseline);
        double p = 1.0 / (1.0 + Math.exp(-(plattA * raw + plattB)));
        if (linearWeight > 0.0) p = (1.0 - linearWeight) * p + linearWeight * linear(x);
        if (forestWeight > 0.0) {
            // ForestPart.probability: the leaves' fraud shares summed in tree order, then the mean.
            double share = blendedForest.sum(x, 0.0) / blendedForest.roots.length;
            p = (1.0 - forestWeight) * p + forestWeight * share;
        }
        return p;
    }

    /** LinearPart.probability: the same operations (the dot product summed feature by feature). */
    private double linear(double[] x) {
        double z = linearIntercept;
        for (int i = 0; i < nFeatures; i++) {
            double v = x[i];
            if (Double.isNaN(v) || Double.isInfinite(v)) v = linearFill[i];
            z = z + linearCoef[i] * ((v - linearMean[i]) / linearScale[i]);
        }
        return 1.0 / (1.0 + Math.exp(-z));
    }

    /**
     * Anomaly in [0, 1]: the forest's score as its empirical CDF over the training traffic.
     * The forest's thresholds come already mapped back to raw feature values by the export
     * (models/tree_export.py), so the raw row is compared as it is: no log1p per row.
     */
    public double anomaly(double[] x) {
        double depths = forest.sumLockstep(x, 0.0);
        double q = denominator != 0.0 ? depths / denominator : 1.0;
        return interp(Math.pow(2.0, -q));
    }

    /** numpy.interp(value, referenceX, referenceY), including its handling of repeated x values. */
    public double interp(double value) {
        int n = referenceX.length;
        if (Double.isNaN(value)) return value;
        // j: the last index with referenceX[j] <= value (numpy's binary_search_with_guess).
        int lo = 0, hi = n;
        while (lo < hi) {
            int mid = (lo + hi) >>> 1;
            if (referenceX[mid] <= value) lo = mid + 1; else hi = mid;
        }
        int j = lo - 1;
        if (j < 0) return referenceY[0];
        if (j >= n - 1) return referenceY[n - 1];
        if (referenceX[j] == value) return referenceY[j];
        double slope = (referenceY[j + 1] - referenceY[j]) / (referenceX[j + 1] - referenceX[j]);
        double out = slope * (value - referenceX[j]) + referenceY[j];
        if (Double.isNaN(out)) {
            out = slope * (value - referenceX[j + 1]) + referenceY[j + 1];
            if (Double.isNaN(out) && referenceY[j] == referenceY[j + 1]) out = referenceY[j];
        }
        return out;
    }
}
