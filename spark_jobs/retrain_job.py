"""Retraining as a Spark batch job: one stage or all of them (spark_jobs/retraining.py).

    txmon spark-submit spark_jobs/retrain_job.py --run-id R [--start ISO --end ISO] [--stage all]
    txmon retrain ...                                 # the same, in-process

Stages: extract (needs --start/--end; default: the last retraining.window_days),
build_features, train, evaluate, promote, all. Each is idempotent per run id; the
output is one JSON line (what the stage produced) for the caller (e.g. Airflow).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime

from txmon.infra.errors import TxmonError
from txmon.infra.settings import load_settings
from txmon.spark_jobs import retraining

STAGES = ("extract", "build_features", "train", "evaluate", "promote", "all")


def _when(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date/time, e.g. 2026-11-20 or 2026-11-20T06:00:00+00:00"
        ) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-id", required=True, help="names the run's directory; same id = same run (idempotent)")
    p.add_argument("--stage", choices=STAGES, default="all")
    p.add_argument("--start", type=_when, help="window start (UTC unless an offset is given)")
    p.add_argument("--end", type=_when, help="window end (default: now)")
    return p


def run(args: argparse.Namespace, settings=None, spark=None) -> object:
    settings = settings or load_settings()
    start, end = retraining.default_window(settings, args.end)
    start = args.start or start
    stage = args.stage
    if stage == "extract":
        return retraining.extract(settings, args.run_id, start, end, spark)
    if stage == "build_features":
        return retraining.build_features(settings, args.run_id, spark)
    if stage == "train":
        return {"challenger_version": retraining.train_challenger(settings, args.run_id)}
    if stage == "evaluate":
        return retraining.evaluate(settings, args.run_id)
    if stage == "promote":
        return {"promoted": retraining.promote(settings, args.run_id)}
    return retraining.retrain(settings, args.run_id, start, end, spark)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        print(json.dumps(run(args), default=str))
    except TxmonError as exc:  # the user can fix it: one line, no traceback
        print(f"retrain_job: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
