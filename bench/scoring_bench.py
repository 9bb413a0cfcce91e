"""Scoring throughput: ``ModelBundle.score`` against the bare classifier's ``predict_proba``.

Both run on the same rows in the same process, so the ratio says what the bundle adds
on top of the gradient-boosting model (frame -> matrix, calibration, the Isolation
Forest and its CDF). ``explain`` is timed per flagged-sized batch as well.

    .venv/bin/python bench/scoring_bench.py                 # champion model, else a quick one
    .venv/bin/python bench/scoring_bench.py --train-events 200000 --rows 50000

Importable: :func:`run` returns the rows, :func:`format_table` prints them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from threadpoolctl import threadpool_info, threadpool_limits

from txmon.models.bundle import feature_matrix
from txmon.models.config import models_dir
from txmon.models.dataset import labelled_features
from txmon.models.registry import Registry
from txmon.models.sources import simulated
from txmon.models.training import TrainingConfig, train

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

__all__ = ["BenchRow", "format_table", "load_or_train", "run", "scoring_frame"]


@dataclass(frozen=True)
class BenchRow:
    batch: int
    score_rows_s: float
    predict_proba_rows_s: float
    explain_rows_s: float | None

    @property
    def ratio(self) -> float:
        """bundle.score throughput / predict_proba throughput (1.0 = no overhead)."""
        return self.score_rows_s / self.predict_proba_rows_s


def _median_seconds(fns, repeats: int) -> list[float]:
    """Median wall time of each function; runs are interleaved so both see the same machine load."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def scoring_frame(events: int, seed: int):
    """Feature rows to score: simulated traffic (default mix, training's 0.2 tx/s)."""

    history = simulated(events, seed)
    return labelled_features(history.events, history.labels)


def load_or_train(version: str | None, train_events: int, seed: int):
    """(bundle, description): a registry version (default the champion) or, when the registry
    is empty, a bundle trained here on ``train_events`` simulated transactions."""

    registry = Registry(models_dir())
    chosen = version or registry.champion()
    if chosen is not None:
        return registry.load(chosen), f"registry {registry.root} {chosen}"

    history = simulated(train_events, seed)
    result = train(history.events, history.labels, TrainingConfig(seed=seed), data_source=history.source)
    return result.bundle, f"trained here on {history.source}"


def run(bundle, frame, batches=(1_000, 10_000, 50_000), repeats: int = 7, explain_batch: int = 100) -> list[BenchRow]:
    """Median rows/s of bundle.score and bundle.classifier.predict_proba for each batch size."""

    rows = []
    for batch in batches:
        part = frame.iloc[:batch]
        if len(part) < batch:
            break
        x = feature_matrix(part)  # prebuilt: predict_proba gets the matrix for free
        score_s, proba_s = _median_seconds(
            [lambda part=part: bundle.score(part), lambda x=x: bundle.classifier.predict_proba(x)], repeats
        )
        explain = None
        if batch == batches[0]:
            head = part.iloc[:explain_batch]
            explain = len(head) / _median_seconds([lambda head=head: bundle.explain(head)], repeats)[0]
        rows.append(BenchRow(batch, batch / score_s, batch / proba_s, explain))
    return rows


def format_table(rows: list[BenchRow]) -> str:
    lines = [
        f"{'rows/batch':>10} {'bundle.score rows/s':>20} {'predict_proba rows/s':>21} {'ratio':>6}"
        f" {'explain rows/s':>15}"
    ]
    for r in rows:
        explain = f"{r.explain_rows_s:,.0f}" if r.explain_rows_s else "-"
        lines.append(
            f"{r.batch:>10,} {r.score_rows_s:>20,.0f} {r.predict_proba_rows_s:>21,.0f} {r.ratio:>6.2f} {explain:>15}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", help="registry version to load [default: the champion]")
    parser.add_argument("--rows", type=int, default=50_000, help="simulated transactions to score")
    parser.add_argument(
        "--train-events",
        type=int,
        default=50_000,
        help="simulated transactions to train on when the registry has no champion",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OpenMP/BLAS threads while timing (Spark runs one single-threaded task per core) "
        "[default: 1; 0 = library default]",
    )
    args = parser.parse_args(argv)

    bundle, where = load_or_train(args.version, args.train_events, args.seed)
    frame = scoring_frame(args.rows, args.seed + 1)  # other traffic than the training default
    batches = tuple(b for b in (1_000, 10_000, 50_000) if b <= len(frame)) or (len(frame),)
    with threadpool_limits(args.threads) if args.threads else nullcontext():
        rows = run(bundle, frame, batches, args.repeats)
        threads = {p.get("user_api"): p.get("num_threads") for p in threadpool_info()}
    trees = getattr(bundle.classifier, "n_iter_", "?")
    print(f"model: {where}; boosting iterations {trees}; thread pools {threads}")
    print(
        f"median of {args.repeats} runs; predict_proba gets a prebuilt float64 matrix, "
        "bundle.score a pandas frame; explain: batches of 100 rows"
    )
    print(format_table(rows))


if __name__ == "__main__":
    main()
