"""The pipeline benchmark's outputs: a printed table, JSON, markdown and a latency histogram."""

from __future__ import annotations

import json
from pathlib import Path


def _fmt_lat(p: dict) -> str:
    if not p:
        return "-"
    return f"{p['p50']:.2f} / {p['p95']:.2f} / {p['p99']:.2f} s (n={p['n']:,})"


def rows(result: dict) -> list[tuple[str, str]]:
    """(measure, value) pairs: the table printed, and the markdown's."""
    out = [
        (
            "machine",
            f"{result['machine']['cpus']} cores, {result['machine']['memory_gib']} GiB, "
            f"commit {result['machine']['commit']}",
        ),
        (
            "load average (1/5/15 min) at start / end",
            " / ".join(" ".join(f"{x:.2f}" for x in result["loadavg"][k]) for k in ("start", "end")),
        ),
    ]
    for b in result["baselines"]:
        out.append((f"baseline: {b['name']}", f"{b['rows_per_s']:,.0f} rows/s"))
    for name, v in result["scoring"].items():
        out.append((f"scoring: {name}", f"{v:,.0f} rows/s"))
    out.append(("pipeline: highest sustained rate", f"{result['sustained_tx_s']:,.0f} tx/s"))
    lat = result["latency"]
    out.append((f"latency at {lat['rate']:,.0f} tx/s: Kafka -> landed (p50/p95/p99)", _fmt_lat(lat["landed_s"])))
    out.append(("  Kafka -> scored row", _fmt_lat(lat["scored_s"])))
    out.append(("  Kafka -> alert on the alerts topic", _fmt_lat(lat["alert_s"])))
    if "alerts" in lat:  # runs before the alert count was recorded lack it
        top = ", ".join(f"{code} {n:,}" for code, n in list(lat["alert_reasons"].items())[:4])
        out.append(
            (
                "  alerts in that phase (top reason codes)",
                f"{lat['alerts']:,} of {lat['transactions']:,} transactions "
                f"({lat['alerts'] / max(1, lat['transactions']):.1%}; {top or 'none'})",
            )
        )
    out += _cpu_rows(lat, result["machine"]["cpus"])
    for name, mb in sorted(result["memory_peak_mb"].items()):
        out.append((f"peak memory (PSS): {name}", f"{mb:,.0f} MiB"))
    out.append(("peak memory (PSS): whole stack (sum at one sample)", f"{result['memory_total_peak_mb']:,.0f} MiB"))
    for name, v in result["ratios"].items():
        out.append((f"ratio: {name}", f"{v:.3f}"))
    return out


def _cpu_rows(lat: dict, cores: int) -> list[tuple[str, str]]:
    """CPU per transaction by process group during the latency phase, and the rate that
    CPU would allow if the machine's cores did nothing else (older results may lack it).

    >>> _cpu_rows({"rate": 1000, "cpu": {"kafka": {"cpu_s": 2.0, "ms_per_tx": 0.05},
    ...                                  "all": {"cpu_s": 70.0, "ms_per_tx": 1.75}}}, cores=2)
    [('CPU per transaction at 1,000 tx/s: kafka', '0.050 ms (2.0 s)'),
     ('CPU per transaction at 1,000 tx/s: all processes',
      '1.750 ms (70.0 s): 2 cores could carry at most 1,143 tx/s at this micro-batch size')]
    """
    cpu = lat.get("cpu")
    if not cpu:
        return []
    out = []
    for name, v in cpu.items():
        if name != "all":
            out.append(
                (
                    f"CPU per transaction at {lat['rate']:,.0f} tx/s: {name}",
                    f"{v['ms_per_tx']:.3f} ms ({v['cpu_s']:.1f} s)",
                )
            )
    total = cpu["all"]
    bound = ""
    if total["ms_per_tx"] > 0:
        bound = f": {cores} cores could carry at most {cores * 1000 / total['ms_per_tx']:,.0f} tx/s at this micro-batch size"
    out.append(
        (
            f"CPU per transaction at {lat['rate']:,.0f} tx/s: all processes",
            f"{total['ms_per_tx']:.3f} ms ({total['cpu_s']:.1f} s){bound}",
        )
    )
    return out


def format_table(result: dict) -> str:
    pairs = rows(result)
    width = max(len(k) for k, _ in pairs) + 2
    return "\n".join(f"{k:<{width}}{v}" for k, v in pairs)


def _steps_markdown(result: dict) -> list[str]:
    lines = [
        "| target tx/s | produced tx/s | processed tx/s | max lag (2nd half) | bound | drain s | "
        "batch rows | batch s | sustained |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for s in result["steps"]:
        drain = "-" if s["drain_seconds"] is None else f"{s['drain_seconds']:.1f}"
        lines.append(
            f"| {s['target_rate']:,.0f} | {s['produce_rate']:,.0f} | {s['processed_rate']:,.0f} | "
            f"{s['max_lag_late']:,} | {s['lag_bound']:,} | {drain} | {s['batch_rows_mean']:,.0f} | "
            f"{s['batch_seconds_mean']:.1f} | {'yes' if s['sustained'] else 'no'} |"
        )
    return lines


def markdown(result: dict) -> str:
    lines = [
        f"# txmon pipeline benchmark, {result['started']}",
        "",
        f"Mode: `{json.dumps(result['mode'])}`",
        "",
        "| measure | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in rows(result)]
    lines += ["", "## Ramp", "", *_steps_markdown(result)]
    lines += [
        "",
        "## Where a micro-batch's time goes (mean durationMs, detection on, backlog run)",
        "",
        "| phase | ms |",
        "|---|---:|",
    ]
    lines += [
        f"| {k} | {v:,.0f} |" for k, v in sorted(result["detect_backlog_duration_ms"].items(), key=lambda kv: -kv[1])
    ]
    lines += [
        "",
        "## Spark jobs by call site (detection on, backlog run)",
        "",
        "| job | count | seconds | share |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['job']} | {r['jobs']} | {r['seconds']:.1f} | {r['share']:.1%} |"
        for r in result.get("detect_backlog_jobs", [])
    ]
    steps = result.get("detect_backlog_steps")
    if steps and steps.get("worker_seconds"):
        batches = max(steps["batches"], 1)
        total = sum(steps["worker_seconds"].values()) or 1.0
        lines += [
            "",
            "## Python steps inside the micro-batch job (detection on, backlog run)",
            "",
            "| step | worker s per batch | share |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {k} | {v / batches:.2f} | {v / total:.0%} |"
            for k, v in sorted(steps["worker_seconds"].items(), key=lambda kv: -kv[1])
        ]
        lines.append(f"| addBatch wall time per batch | {steps['add_batch_s'] / batches:.2f} | |")
    lines += ["", "![latency](latency.png)", ""]
    return "\n".join(lines)


def histogram(result: dict, path: Path) -> None:
    # lazy: matplotlib (1.7 s to import), only for the chart; Agg is set before pyplot loads
    import matplotlib

    matplotlib.use("Agg")
    # lazy: matplotlib (4.0 s to import), only for the chart; Agg is set before pyplot loads
    import matplotlib.pyplot as plt

    samples = result.get("_latency_samples", {})
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, label in (("landed_s", "Kafka -> landed"), ("scored_s", "Kafka -> scored"), ("alert_s", "Kafka -> alert")):
        values = samples.get(key) or []
        if values:
            ax.hist(values, bins=60, alpha=0.5, label=f"{label} (n={len(values):,})")
    ax.set_xlabel("seconds")
    ax.set_ylabel("transactions")
    ax.set_title(f"End-to-end latency at {result['latency']['rate']:,.0f} tx/s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result: dict, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / "bench.json"
    js.write_text(json.dumps({k: v for k, v in result.items() if not k.startswith("_")}, indent=2, default=str))
    md = out_dir / "bench.md"
    md.write_text(markdown(result))
    png = out_dir / "latency.png"
    histogram(result, png)
    return [js, md, png]
