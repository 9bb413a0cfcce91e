"""A model bundle's tree ensembles and linear model as flat arrays, for the JVM scorer.

The stream scores in the JVM (spark_jobs/jvm/io/txmon/scoring/TreeModels.java) so its
rows never cross to Python for the models. This module writes what that class reads:
big-endian ints/doubles/booleans in one byte string (``DataInputStream`` order).

The forest's input transform (float32 of ``signed_log1p``) is folded into its
thresholds (:func:`raw_thresholds`), so the JVM compares raw feature values and needs
no log1p of its own. It reads scikit-learn's fitted internals, like
:class:`models.bundle.ForestPaths`:
the gradient-boosting predictors' node records and baseline, the forest's per-tree
arrays and leaf path lengths (scikit-learn is pinned in requirements.lock). Anything
the JVM evaluator does not implement (categorical splits, multi-class, another
anomaly pipeline) raises ``UnsupportedModelError`` naming it, and the stream refuses the
bundle with that message instead of scoring it differently.
"""

from __future__ import annotations

import io
import struct

import numpy as np

from txmon.models.bundle import LOG_FEATURES, ForestPaths, ModelBundle, signed_log1p
from txmon.models.features import FEATURES

__all__ = ["UnsupportedModelError", "raw_thresholds", "tree_bytes"]

_MAGIC = 0x54584D31  # "TXM1"; the Java side checks it at both ends of the export


class UnsupportedModelError(ValueError):
    """The bundle uses something TreeModels.java does not evaluate."""


def _utf(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack(">H", len(data)) + data  # DataInputStream.readUTF (ASCII-safe)


def _ints(values) -> bytes:
    return np.asarray(values, dtype=">i4").tobytes()


def _doubles(values) -> bytes:
    return np.asarray(values, dtype=">f8").tobytes()


def _bools(values) -> bytes:
    return np.asarray(values, dtype=bool).astype(np.uint8).tobytes()


def _trees(out: io.BytesIO, feature, threshold, missing_left, left, right, value) -> None:
    """One ensemble: per-tree node counts, then each node array over all trees. A leaf has
    feature -1 and its output in ``value``; child indexes count from the tree's first node."""
    out.write(_ints([len(feature)]) + _ints([len(f) for f in feature]))
    for column in (
        _ints(np.concatenate(feature)),
        _doubles(np.concatenate(threshold)),
        _bools(np.concatenate(missing_left)),
        _ints(np.concatenate(left)),
        _ints(np.concatenate(right)),
        _doubles(np.concatenate(value)),
    ):
        out.write(column)


def _classifier(out: io.BytesIO, bundle: ModelBundle) -> None:
    clf = bundle.classifier
    if getattr(clf, "n_trees_per_iteration_", 1) != 1:
        raise UnsupportedModelError("the JVM scorer handles a binary classifier only (one tree per iteration)")
    baseline = np.asarray(clf._baseline_prediction, dtype=np.float64).ravel()
    nodes = [predictor.nodes for (predictor,) in clf._predictors]
    if any(n["is_categorical"].any() for n in nodes):
        raise UnsupportedModelError("the classifier has categorical splits; the JVM scorer handles numeric ones only")
    a, b = bundle.platt
    out.write(_doubles([baseline[0], a, b]))
    leaf = [n["is_leaf"].astype(bool) for n in nodes]
    _trees(
        out,
        [np.where(lf, -1, n["feature_idx"]) for n, lf in zip(nodes, leaf)],
        [n["num_threshold"] for n in nodes],
        [n["missing_go_to_left"] for n in nodes],
        [np.where(lf, -1, n["left"].astype(np.int64)) for n, lf in zip(nodes, leaf)],
        [np.where(lf, -1, n["right"].astype(np.int64)) for n, lf in zip(nodes, leaf)],
        [n["value"] for n in nodes],
    )


_SIGN = np.uint64(1 << 63)


def _ordered(v: np.ndarray) -> np.ndarray:
    """Doubles -> uint64 keys in the same order (-inf smallest, +inf largest)."""
    bits = v.view(np.uint64)
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


def _unordered(key: np.ndarray) -> np.ndarray:
    return np.where(key & _SIGN, key & ~_SIGN, ~key).view(np.float64)


def _forest_input(v: np.ndarray, log: np.ndarray) -> np.ndarray:
    """What the forest's trees compare for a raw feature value: signed_log1p's expression
    (log features), then float32 as sklearn's trees read it; as float64."""
    with np.errstate(over="ignore", invalid="ignore"):
        logged = np.where(log, np.sign(v) * np.log1p(np.abs(v)), v)
        return logged.astype(np.float32).astype(np.float64)


def raw_thresholds(threshold: np.ndarray, log: np.ndarray) -> np.ndarray:
    """Each split's threshold mapped back to raw feature values.

    A split sends a row left when ``f(v) <= t``, with ``f`` the forest's input transform
    (:func:`_forest_input`; ``log`` says per split whether the feature is log-transformed).
    ``f`` never decreases, so that holds exactly when ``v <= t'``, with ``t'`` the largest
    double for which ``f(t') <= t``: found here by bisecting the 2**64 doubles in order,
    with numpy's own log1p. The JVM then compares raw values, with no log1p per row, and
    agrees with the Python path on every split, bit for bit (tests/unit/test_models_bundle.py).
    """
    threshold = np.asarray(threshold, dtype=np.float64)
    lo = np.full(threshold.shape, _ordered(np.array([-np.inf]))[0])  # f(-inf) = -inf <= t: true
    hi = np.full(threshold.shape, _ordered(np.array([np.inf]))[0])
    while np.any(lo < hi):
        mid = lo + (hi - lo + np.uint64(1)) // np.uint64(2)
        ok = _forest_input(_unordered(mid), log) <= threshold
        lo = np.where(ok, mid, lo)
        hi = np.where(ok, hi, mid - np.uint64(1))
    return _unordered(lo)


def _forest(out: io.BytesIO, bundle: ModelBundle) -> None:
    steps = bundle.anomaly_model[:-1]
    if len(steps) != 1 or getattr(steps[0], "func", None) is not signed_log1p:
        raise UnsupportedModelError(
            "the anomaly pipeline is not signed_log1p -> IsolationForest "
            "(models.bundle.anomaly_pipeline); the JVM scorer implements only that"
        )
    paths = ForestPaths(bundle.anomaly_model)
    is_log = np.array([f in LOG_FEATURES for f in FEATURES])
    out.write(_doubles([paths.denominator]))
    features, thresholds, missing, lefts, rights, terms = [], [], [], [], [], []
    for tree, subset, leaf_term in paths.trees:
        leaf = tree.children_left < 0
        feature = tree.feature.astype(np.int64)
        if subset is not None:  # a tree fitted on a feature subset indexes that subset: map to FEATURES
            feature = np.asarray(subset)[np.maximum(feature, 0)]
        features.append(np.where(leaf, -1, feature))
        thresholds.append(np.where(leaf, np.nan, raw_thresholds(tree.threshold, is_log[feature])))
        missing.append(tree.missing_go_to_left)
        lefts.append(tree.children_left)
        rights.append(tree.children_right)
        terms.append(leaf_term)
    _trees(out, features, thresholds, missing, lefts, rights, terms)


def _linear(out: io.BytesIO, bundle: ModelBundle) -> None:
    """The blended logistic regression (LinearPart): weight, then fill, mean, scale and
    coefficient per feature and the intercept; weight 0 and zeros when there is none."""
    linear, n = getattr(bundle, "linear", None), len(FEATURES)
    weight = float(getattr(bundle, "linear_weight", 0.0)) if linear is not None else 0.0
    if linear is None or weight <= 0:
        out.write(_doubles([0.0]) + _doubles(np.zeros(4 * n + 1)))
        return
    arrays = [np.asarray(a, dtype=np.float64) for a in (linear.fill, linear.mean, linear.scale, linear.coef)]
    if any(a.shape != (n,) for a in arrays):
        raise UnsupportedModelError("the blended linear model does not have one coefficient per feature")
    out.write(_doubles([weight]) + b"".join(_doubles(a) for a in arrays) + _doubles([linear.intercept]))


def _blended_forest(out: io.BytesIO, bundle: ModelBundle) -> None:
    """The blended random forest (ForestPart): weight, then its trees, each leaf's value its
    fraud share, thresholds mapped back to raw values from the float32 the trees compare;
    weight 0 and no trees when there is none."""
    forest = getattr(bundle, "forest", None)
    weight = float(getattr(bundle, "forest_weight", 0.0)) if forest is not None else 0.0
    if forest is None or weight <= 0:
        out.write(_doubles([0.0]) + _ints([0]))  # an ensemble of no trees
        return
    out.write(_doubles([weight]))
    features, thresholds, missing, lefts, rights, shares = zip(*forest.node_arrays())
    if any(len(f) and int(np.max(f)) >= len(FEATURES) for f in features):
        raise UnsupportedModelError("the blended random forest splits on a feature outside FEATURES")
    leaves = [left < 0 for left in lefts]
    _trees(
        out,
        [np.where(leaf, -1, f) for f, leaf in zip(features, leaves)],
        [
            np.where(leaf, np.nan, raw_thresholds(t, np.zeros(len(t), dtype=bool)))
            for t, leaf in zip(thresholds, leaves)
        ],
        missing,
        lefts,
        rights,
        shares,
    )


def tree_bytes(bundle: ModelBundle, version: str) -> bytes:
    """The export TreeModels.fromBytes reads (a few hundred KB for the default models)."""
    if tuple(bundle.features) != FEATURES:
        raise UnsupportedModelError(
            "this bundle was trained on a different feature list; retrain it with `txmon train`"
        )
    out = io.BytesIO()
    out.write(_ints([_MAGIC]) + _utf(version) + _ints([len(FEATURES)]))
    _classifier(out, bundle)
    _forest(out, bundle)
    reference = np.asarray(bundle.anomaly_reference, dtype=np.float64)
    out.write(_ints([len(reference)]) + _doubles(reference) + _doubles(np.linspace(0.0, 1.0, len(reference))))
    _linear(out, bundle)
    _blended_forest(out, bundle)
    out.write(_ints([_MAGIC]))
    return out.getvalue()
