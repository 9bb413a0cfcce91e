"""Tree ensembles walked one level at a time, every tree and row at once (numpy only).

The scoring API scores one row per request. scikit-learn scores a row tree by tree: for
the default champion 300 boosting and 100 forest calls, each with its input checks, an
output array and a thread-pool dispatch, which cost more than the comparisons. Here a
level is a handful of numpy operations over (rows, trees). :class:`models.bundle.ModelBundle`
uses it up to :data:`LOCKSTEP_ROWS` rows and scikit-learn's own per-tree Cython above.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["LOCKSTEP_ROWS", "LockstepTrees"]

LOCKSTEP_ROWS = 64
"""Up to this many rows, the bundle walks its trees with :class:`LockstepTrees`; above,
with scikit-learn's per-tree Cython (one C loop over the rows per tree wins there)."""


class LockstepTrees:
    """An ensemble's trees as one set of node arrays, walked one level at a time for every
    tree and row at once.

    For a few rows (the scoring API scores one) a call into scikit-learn per tree costs more
    than the walk: its input validation, an output array and a thread-pool dispatch per
    call, 300 boosting and 100 forest calls per row. Here a level is a handful of numpy
    operations over (rows, trees), for the deepest tree's number of levels.

    The comparisons are scikit-learn's own (``HistGradientBoosting``'s ``_predictor.pyx``
    and ``Tree._apply_dense``): a NaN goes where the split's ``missing_go_to_left`` says,
    else left when ``value <= threshold``; a leaf's children are itself, so a row that
    reached it stays. The per-tree outputs are added in tree order, one at a time, onto
    ``start`` (``np.add.accumulate``, never numpy's pairwise ``sum``), as scikit-learn's
    ``+=`` per tree adds them: the totals are equal bit for bit
    (tests/unit/test_lockstep_trees.py)."""

    def __init__(self, trees: Sequence[Sequence[Any]], start: float = 0.0) -> None:
        """``trees``: per tree (feature, threshold, missing_go_to_left, left, right, output),
        node arrays with children as indexes into the tree (negative at a leaf)."""
        features, thresholds, missing, children, outputs, roots = [], [], [], [], [], []
        offset = 0
        for feature, threshold, missing_left, left, right, output in trees:
            n = len(feature)
            leaf = np.asarray(left) < 0
            own = np.arange(offset, offset + n)
            pair = np.empty(2 * n, dtype=np.intp)
            pair[0::2] = np.where(leaf, own, np.asarray(left) + offset)
            pair[1::2] = np.where(leaf, own, np.asarray(right) + offset)
            features.append(np.where(leaf, 0, feature))
            thresholds.append(np.where(leaf, np.nan, threshold))  # `v <= nan` is false: right, to itself
            missing.append(np.where(leaf, False, np.asarray(missing_left, dtype=bool)))
            children.append(pair)
            outputs.append(np.asarray(output, dtype=np.float64))
            roots.append(offset)
            offset += n
        self.feature = np.concatenate(features).astype(np.intp)
        self.threshold = np.concatenate(thresholds).astype(np.float64)
        self.missing_left = np.concatenate(missing)
        self.children = np.concatenate(children)
        self.output = np.concatenate(outputs)
        self.roots = np.asarray(roots, dtype=np.intp)
        self.start = float(start)
        self.levels = 0  # the deepest tree's number of splits on a path
        frontier = self.roots
        while True:
            inner = frontier[self.children[2 * frontier] != frontier]
            if len(inner) == 0:
                break
            self.levels += 1
            frontier = np.concatenate([self.children[2 * inner], self.children[2 * inner + 1]])

    def leaf_outputs(self, x: np.ndarray) -> np.ndarray:
        """(rows, trees): the output of the leaf each row reaches in each tree."""
        n, d = x.shape
        flat = np.ascontiguousarray(x, dtype=np.float64).ravel()
        base = (np.arange(n, dtype=np.intp) * d)[:, None]
        node = np.empty((n, len(self.roots)), dtype=np.intp)
        node[:] = self.roots
        any_nan = bool(np.isnan(flat).any())
        for _ in range(self.levels):
            v = flat[base + self.feature[node]]
            right = ~(v <= self.threshold[node])
            if any_nan:
                right &= ~(np.isnan(v) & self.missing_left[node])
            node = self.children[2 * node + right]
        return self.output[node]

    def total(self, x: np.ndarray) -> np.ndarray:
        """``start`` plus every tree's output, added in tree order, per row."""
        outputs = self.leaf_outputs(x)
        terms = np.empty((len(outputs), outputs.shape[1] + 1))
        terms[:, 0] = self.start
        terms[:, 1:] = outputs
        return np.add.accumulate(terms, axis=1)[:, -1]

    @staticmethod
    def of_classifier(classifier) -> LockstepTrees | None:
        """The boosting's trees, its baseline as ``start``: ``total`` equals
        ``decision_function`` (None for what this does not walk: categorical splits, more
        than one tree per iteration, a column preprocessor)."""
        if getattr(classifier, "n_trees_per_iteration_", 1) != 1 or getattr(classifier, "_preprocessor", None):
            return None
        nodes = [predictor.nodes for (predictor,) in classifier._predictors]
        if any(n["is_categorical"].any() for n in nodes):
            return None
        baseline = np.asarray(classifier._baseline_prediction, dtype=np.float64).ravel()
        if len(baseline) != 1:
            return None
        trees = [
            (
                n["feature_idx"],
                n["num_threshold"],
                n["missing_go_to_left"],
                np.where(n["is_leaf"].astype(bool), -1, n["left"].astype(np.int64)),
                np.where(n["is_leaf"].astype(bool), -1, n["right"].astype(np.int64)),
                n["value"],
            )
            for n in nodes
        ]
        return LockstepTrees(trees, start=0.0 + baseline[0])

    @staticmethod
    def of_forest(paths) -> LockstepTrees:
        """The forest's trees over FEATURES columns (``paths``: models.bundle.ForestPaths),
        each leaf's output its path-length term: ``total`` of the forest's input equals
        ForestPaths' summed depths."""
        trees = []
        for tree, subset, leaf_term in paths.trees:
            feature = tree.feature.astype(np.int64)
            if subset is not None:  # a tree fitted on a feature subset indexes that subset
                feature = np.asarray(subset)[np.maximum(feature, 0)]
            trees.append(
                (feature, tree.threshold, tree.missing_go_to_left, tree.children_left, tree.children_right, leaf_term)
            )
        return LockstepTrees(trees, start=0.0)
