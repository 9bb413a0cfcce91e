"""Tree ensembles scored for a few rows at once, without a scikit-learn call per tree.

The scoring API scores one row per request. scikit-learn scores a row tree by tree: for
the default champion 300 boosting and 100 forest calls, each with its input checks, an
output array and a thread-pool dispatch, which cost more than the comparisons.

- :class:`LockstepTrees`: every tree's nodes in one set of arrays, walked one level at a
  time for every tree and row at once (a handful of numpy operations per level);
- :class:`DispatchTrees`: the same trees as ONE scikit-learn gradient-boosting predictor,
  whose first levels pick the tree by a tree-number column: one compiled call walks every
  (row, tree) pair, a few microseconds per hundred trees, where the lockstep walk pays
  numpy's per-operation cost at every level.

:class:`models.bundle.ModelBundle` uses them up to :data:`LOCKSTEP_ROWS` rows and
scikit-learn's own per-tree Cython above.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["DISPATCH_PAIRS", "LOCKSTEP_ROWS", "DispatchTrees", "LockstepTrees"]

LOCKSTEP_ROWS = 64
"""Up to this many rows, the bundle walks its trees with :class:`LockstepTrees`; above,
with scikit-learn's per-tree Cython (one C loop over the rows per tree wins there)."""

DISPATCH_PAIRS = 4096
"""Up to this many (row, tree) pairs, a bundle's ensemble is walked by :class:`DispatchTrees`
(one row of its input per pair), above by :class:`LockstepTrees`, whose cost grows with
the levels rather than the pairs (bench/scoring_bench.py measures both)."""


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


class DispatchTrees:
    """Ensembles' trees as one scikit-learn ``HistGradientBoosting`` predictor node array,
    walked by its compiled ``_predict_from_raw_data`` in one call for every (row, tree) pair.

    That function walks each input row from node 0. Here node 0 starts a balanced binary
    search on a last, extra input column holding the tree's number (``k <= t - 0.5``, exact
    on small integers), whose leaves are the trees' own roots; the trees' nodes follow,
    their features shifted by their ensemble's column offset. A row of the input is one
    (row, tree) pair: the row's columns and the tree's number; its output is the leaf that
    row reaches in that tree.

    The comparisons are those of :class:`LockstepTrees` (scikit-learn's own: NaN goes where
    ``missing_go_to_left`` says, else left when ``value <= threshold``, in float64; a forest's
    float32 input compared as its exact float64), and each ensemble's outputs are added onto
    its ``start`` in tree order with ``np.add.accumulate``, as :meth:`LockstepTrees.total`
    adds them: the totals are equal bit for bit (tests/unit/test_lockstep_trees.py). It reads
    scikit-learn's private predictor record and function (pinned in requirements.lock); an
    upgrade that changes them fails those tests."""

    def __init__(self, ensembles: Sequence[tuple[LockstepTrees, int]], width: int) -> None:
        """``ensembles``: (walk, first column of its features in the input) each; ``width``:
        the input's number of columns (the tree number is one more)."""
        # lazy: scikit-learn (4.5 s to import); models.bundle loads this module where bundles
        # are only unpickled (Spark executors), and only a few-row call (the API's) makes one
        from sklearn.ensemble._hist_gradient_boosting._predictor import _predict_from_raw_data
        from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

        self._predict = _predict_from_raw_data

        self.width = width
        self.starts = [walk.start for walk, _ in ensembles]
        self.bounds = np.cumsum([0] + [len(walk.roots) for walk, _ in ensembles])
        n_trees = int(self.bounds[-1])
        n_split = n_trees - 1  # a balanced search over n trees has n - 1 splits
        block = n_split
        roots, blocks = [], []
        for walk, column in ensembles:
            roots.append(walk.roots + block)
            blocks.append((walk, column, block))
            block += len(walk.feature)
        root = np.concatenate(roots)
        nodes = np.zeros(block, dtype=PREDICTOR_RECORD_DTYPE)
        for walk, column, first in blocks:
            part = nodes[first : first + len(walk.feature)]
            left, right = walk.children[0::2], walk.children[1::2]
            leaf = left == np.arange(len(walk.feature))
            part["is_leaf"] = leaf
            part["value"] = np.where(leaf, walk.output, 0.0)
            part["feature_idx"] = np.where(leaf, 0, walk.feature + column)
            part["num_threshold"] = np.where(leaf, 0.0, walk.threshold)
            part["missing_go_to_left"] = walk.missing_left & ~leaf
            part["left"] = np.where(leaf, 0, left + first)
            part["right"] = np.where(leaf, 0, right + first)
        split = iter(range(n_split))

        def search(lo: int, hi: int) -> int:
            """The node choosing among trees lo..hi-1: a tree's root, or a split of them."""
            if hi - lo == 1:
                return int(root[lo])
            at, mid = next(split), (lo + hi) // 2
            nodes["feature_idx"][at] = width
            nodes["num_threshold"][at] = mid - 0.5
            nodes["left"][at] = search(lo, mid)
            nodes["right"][at] = search(mid, hi)
            return at

        search(0, n_trees)  # node 0: the first split (or, for one tree, its root)
        self.nodes = nodes
        self.trees = n_trees
        self._number = np.arange(n_trees, dtype=np.float64)
        self._no_bitsets = np.zeros((0, 8), dtype=np.uint32)
        self._no_categories = np.zeros(width + 1, dtype=np.uint32)

    def totals(self, x: np.ndarray) -> list[np.ndarray]:
        """Per ensemble, per row of ``x`` (rows, width): ``start`` plus every tree's output,
        added in tree order."""
        n = len(x)
        pairs = np.empty((n, self.trees, self.width + 1), dtype=np.float64)
        pairs[:, :, : self.width] = np.asarray(x, dtype=np.float64)[:, None, :]
        pairs[:, :, self.width] = self._number
        out = np.empty(n * self.trees, dtype=np.float64)
        self._predict(
            self.nodes,
            pairs.reshape(n * self.trees, self.width + 1),
            self._no_bitsets,
            self._no_bitsets,
            self._no_categories,
            1,  # one thread: an API worker scores one request at a time on its event loop
            out,
        )
        leaves = out.reshape(n, self.trees)
        totals = []
        for start, lo, hi in zip(self.starts, self.bounds[:-1], self.bounds[1:]):
            terms = np.empty((n, hi - lo + 1), dtype=np.float64)
            terms[:, 0] = start
            terms[:, 1:] = leaves[:, lo:hi]
            totals.append(np.add.accumulate(terms, axis=1)[:, -1])
        return totals
