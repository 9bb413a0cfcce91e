"""The daily digest for fraud-desk staff: counts by decision, severity and rule, the
accounts with most alerts (masked), and a chart of alerts per hour, as an HTML email.

The day is a parameter (an IST calendar day, the ``alerts_by_day`` partition), never
"today": a DAG run for a given day builds the same digest, and the delivery log keeps
it from being sent twice.
"""

from __future__ import annotations

import dataclasses
import io
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from txmon.alerting.channels.base import InlineImage
from txmon.alerting.contract import ALERT_ID_NAMESPACE, DAY_TZ
from txmon.alerting.delivery import Job, Outcome
from txmon.alerting.dispatcher import build_message
from txmon.alerting.render import Rendered, render_template
from txmon.alerting.runtime import Runtime
from txmon.infra.masking import mask_account
from txmon.ingestion.events import format_inr
from txmon.models.risk import ALERT_DECISIONS, SEVERITIES

CHART_CID = "alerts-per-hour@txmon"


@dataclass(frozen=True)
class DigestData:
    day: date
    total: int
    total_amount: str
    by_decision: dict[str, int]
    by_severity: dict[str, int]
    by_rule: list[tuple[str, int]]
    top_accounts: list[dict[str, Any]]
    hourly: dict[str, list[int]]  # decision -> 24 counts by IST hour

    @property
    def busiest_hour(self) -> str:
        totals = [sum(v[h] for v in self.hourly.values()) for h in range(24)]
        if not any(totals):
            return "none"
        hour = max(range(24), key=lambda h: (totals[h], -h))
        return f"{hour:02d}:00-{hour + 1:02d}:00 IST ({totals[hour]} alerts)"


def summarize(rows: Iterable[dict[str, Any]], day: date, *, top_accounts: int = 10, top_rules: int = 15) -> DigestData:
    """Pure summary of one day's ``alerts_by_day`` rows.

    >>> from datetime import datetime, timezone
    >>> t = datetime(2026, 1, 5, 4, 0, tzinfo=timezone.utc)  # 09:30 IST
    >>> payer = dict(payer_ref="0f" * 16, payer_account_masked="XXXXXXXX9012")
    >>> rows = [dict(payer, decision="BLOCK", severity="HIGH", amount_paise=500,
    ...              reason_codes=["AMOUNT_SPIKE", "NEW_DEVICE"], event_time=t),
    ...         dict(payer, decision="REVIEW", severity="LOW", amount_paise=100,
    ...              reason_codes=["AMOUNT_SPIKE"], event_time=t)]
    >>> d = summarize(rows, date(2026, 1, 5))
    >>> d.total, d.by_decision, d.by_rule
    (2, {'BLOCK': 1, 'REVIEW': 1}, [('AMOUNT_SPIKE', 2), ('NEW_DEVICE', 1)])
    >>> d.top_accounts[0]["account"], d.top_accounts[0]["alerts"], d.hourly["BLOCK"][9]
    ('XXXXXXXX9012', 2, 1)
    """
    rows = list(rows)
    decisions: Counter[str] = Counter(r["decision"] for r in rows)
    severities: Counter[str] = Counter(r["severity"] for r in rows)
    rules: Counter[str] = Counter(code for r in rows for code in dict.fromkeys(r["reason_codes"]))
    per_account: dict[str, list[dict[str, Any]]] = defaultdict(list)
    hourly = {d: [0] * 24 for d in ALERT_DECISIONS}
    for r in rows:
        per_account[r["payer_ref"]].append(r)  # two accounts can share a masked form
        hourly.setdefault(r["decision"], [0] * 24)[r["event_time"].astimezone(DAY_TZ).hour] += 1
    ranked = sorted(per_account.items(), key=lambda kv: (-len(kv[1]), -sum(r["amount_paise"] for r in kv[1]), kv[0]))
    return DigestData(
        day=day,
        total=len(rows),
        total_amount=format_inr(sum(r["amount_paise"] for r in rows)),
        by_decision={d: decisions.get(d, 0) for d in ALERT_DECISIONS[::-1]},  # BLOCK first
        by_severity={s: severities.get(s, 0) for s in SEVERITIES[::-1]},
        by_rule=sorted(rules.items(), key=lambda kv: (-kv[1], kv[0]))[:top_rules],
        top_accounts=[
            {
                "account": mask_account(rs[0]["payer_account_masked"]),
                "alerts": len(rs),
                "blocks": sum(r["decision"] == "BLOCK" for r in rs),
                "amount": format_inr(sum(r["amount_paise"] for r in rs)),
            }
            for acct, rs in ranked[:top_accounts]
        ],
        hourly=hourly,
    )


def chart_png(data: DigestData) -> bytes:
    """Stacked bars of alerts per IST hour by decision (matplotlib, Agg, no display)."""
    # matplotlib (slow to import) only when a chart is drawn.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    hours = list(range(24))
    bottom = [0] * 24
    colours = {"BLOCK": "#b00020", "REVIEW": "#e0a800"}
    for decision in ("BLOCK", "REVIEW"):
        counts = data.hourly.get(decision, [0] * 24)
        ax.bar(hours, counts, bottom=bottom, label=decision, color=colours[decision], width=0.8)
        bottom = [b + c for b, c in zip(bottom, counts)]
    ax.set_xticks(hours[::2], [f"{h:02d}" for h in hours[::2]])
    ax.set_xlabel("hour (IST)")
    ax.set_ylabel("alerts")
    ax.set_title(f"Alerts per hour, {data.day.isoformat()}")
    ax.legend(loc="upper left", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


def render_digest(data: DigestData, bank: Any) -> Rendered:
    context = {"d": data, "bank": bank, "chart_cid": CHART_CID, "title": f"txmon digest {data.day}"}
    subject = " ".join(render_template("digest.subject.j2", context).split())
    return Rendered(subject, render_template("digest.txt.j2", context), render_template("digest.html.j2", context))


def digest_id(day: date) -> uuid.UUID:
    """One digest per day: its delivery id, so a re-run does not send it again."""
    return uuid.uuid5(ALERT_ID_NAMESPACE, f"digest:{day.isoformat()}")


@dataclass(frozen=True)
class DigestResult:
    data: DigestData
    outcomes: list[Outcome]


def build_digest(rt: Runtime, day: date) -> tuple[DigestData, Rendered, bytes]:
    cfg = rt.config.digest
    data = summarize(rt.store.alerts_for_day(day), day, top_accounts=cfg.top_accounts, top_rules=cfg.top_rules)
    return data, render_digest(data, rt.config.bank), chart_png(data)


def send_digest(rt: Runtime, day: date, *, out_dir: Path | None = None) -> DigestResult:
    """Build the digest of ``day`` and email it to the digest group (or, with
    ``out_dir``, write digest.html / digest.txt / chart PNG there instead)."""
    data, rendered, png = build_digest(rt, day)
    if out_dir is not None:
        assert rendered.html is not None  # the digest template has an HTML part
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"digest-{day}.html").write_text(rendered.html.replace(f"cid:{CHART_CID}", f"digest-{day}.png"))
        (out_dir / f"digest-{day}.txt").write_text(rendered.text)
        (out_dir / f"digest-{day}.png").write_bytes(png)
        return DigestResult(data, [])
    outcomes = []
    delivery_id = digest_id(day)
    for recipient in rt.directory.staff(rt.config.digest.recipients, "email"):
        base = build_message(delivery_id, "digest", recipient, rendered)
        message = dataclasses.replace(base, inline_images=(InlineImage(CHART_CID, png),))
        # Re-running the command is the retry of a digest that failed; a sent one stays sent.
        outcomes.append(rt.deliverer.deliver(Job(delivery_id, "digest", "digest", None, message), retry_failed=True))
    return DigestResult(data, outcomes)
