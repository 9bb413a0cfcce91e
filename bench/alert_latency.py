"""Alert delivery latency: from an alert's ``created_at`` to the SMTP server's 250 reply.

    .venv/bin/python bench/alert_latency.py --count 300 --rate 50

Runs against Kafka and Cassandra as configured (TXMON_* variables), starting them
through ``infra.stack`` when they are not running (and stopping them again afterwards
unless --keep-services). The providers are local: an aiosmtpd SMTP server and a
Twilio-shaped HTTP gateway on loopback. Each alert is a BLOCK for its own account, so
it goes out as one email (fraud desk) and one SMS (customer), in parallel; throttling
is off, so every alert is a message.

Path measured: producer -> Kafka ``alerts`` topic -> dispatcher (validate, upsert the
alert, contact lookup, routing, delivery log 'sending', SMTP/HTTP, delivery log 'sent')
-> SMTP 250. The baseline, measured in the same run, is the SMTP send alone (the
email channel straight to the same server): the ratio is what the pipeline adds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from txmon.alerting.channels import EmailChannel, OutboundMessage, Recipient
from txmon.alerting.config import SmtpConfig, ThrottleConfig, load_alerting_config
from txmon.alerting.contract import alert_id_for
from txmon.alerting.publish import AlertPublisher
from txmon.alerting.runtime import dispatch
from txmon.alerting.store import open_store
from txmon.alerting.testing import SmsGatewayStub, SmtpSink, land_payers, make_alert
from txmon.infra import stack
from txmon.infra.services.kafka import ensure_topics
from txmon.infra.settings import load_settings


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(name: str, ms: list[float]) -> str:
    return (
        f"{name:<34} n={len(ms):<5} p50={percentile(ms, 50):7.1f} ms  p90={percentile(ms, 90):7.1f} ms  "
        f"p99={percentile(ms, 99):7.1f} ms  max={max(ms):7.1f} ms  mean={statistics.fmean(ms):7.1f} ms"
    )


def baseline(smtp: SmtpSink, count: int) -> list[float]:
    """SMTP send alone: the email channel straight to the same local server."""
    channel = EmailChannel(SmtpConfig(port=smtp.port, security="none"))
    recipient = Recipient("email", "desk@bank.example", "de***@bank.example", "staff", "bench")
    out = []
    for i in range(count):
        start = time.time()
        channel.send(OutboundMessage(f"baseline-{i}", recipient, "baseline", "text", "<p>html</p>"))
        out.append((smtp.messages()[-1].accepted_at - start) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="alerts to time (after one warm-up alert)")
    parser.add_argument("--rate", type=float, default=50.0, help="alerts produced per second")
    parser.add_argument("--keep-services", action="store_true", help="leave Kafka/Cassandra running if started here")
    args = parser.parse_args()

    settings = load_settings()
    were_running = all(s.healthy for s in stack.status(settings))
    if not were_running:
        print("starting Kafka and Cassandra ...", flush=True)
    stack.up(settings, log=lambda msg: None)
    run = uuid.uuid4().hex[:8]
    topic = f"bench_alerts_{run}"
    ensure_topics(settings.kafka.bootstrap, [topic], settings.kafka.partitions)

    with SmtpSink() as smtp, SmsGatewayStub(token="bench") as gateway:
        os.environ.update(
            {
                "TXMON_ALERTING__SMTP__PORT": str(smtp.port),
                "TXMON_ALERTING__SMTP__SECURITY": "none",
                "TXMON_ALERTING__SMS__BASE_URL": gateway.base_url,
                "TXMON_ALERTING__SMS__ACCOUNT_SID": gateway.account_sid,
                "TXMON_SMS_TOKEN": "bench",
                "TXMON_ALERTING__DISPATCHER__POLL_MS": "100",
            }
        )
        config = load_alerting_config(
            throttle=ThrottleConfig(enabled=False),
            routes=[
                {
                    "name": "block",
                    "match": {"decisions": ["BLOCK"]},
                    "deliver": [{"channel": "sms", "to": "customer"}, {"channel": "email", "to": "fraud_desk"}],
                }
            ],
        )
        total = args.count + 1
        accounts = [f"6{int(run, 16) % 10**5:05d}{i:06d}" for i in range(total)]  # 12 digits, unique per run
        phones = {"+9198" + a[-8:]: i for i, a in enumerate(accounts)}
        cluster, store = open_store(settings)
        store.save_contacts([(a, phone, None, None) for phone, a in zip(phones, accounts)], datetime.now(UTC))
        # The dispatcher finds a customer through the transaction's row (alerts carry no account).
        land_payers(store.session, [(f"BENCH{run}{i:07d}", a) for i, a in enumerate(accounts)])
        cluster.shutdown()

        result: dict = {}
        worker = threading.Thread(
            target=lambda: result.update(
                stats=dispatch(settings, config, topic=topic, group_id=f"bench-{run}", max_messages=total)
            )
        )
        worker.start()

        def alert(i: int):
            now = datetime.now(UTC)
            return make_alert(
                i, txn_id=f"BENCH{run}{i:07d}", account=accounts[i], created_at=now, event_time=now, severity="HIGH"
            )

        publisher = AlertPublisher(settings, topic)  # long-lived, as the detection engine's would be
        publisher.send(alert(0)).get(timeout=30)  # warm-up: group join, connections, prepared statements
        smtp.wait_for(1, timeout_s=120)
        created: dict[str, datetime] = {}
        start = time.monotonic()
        for i in range(1, total):
            delay = start + (i - 1) / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            a = alert(i)
            created[str(a.alert_id)] = a.created_at
            publisher.send(a)
        publisher.flush()
        publisher.close()
        mails = smtp.wait_for(total, timeout_s=300)
        worker.join(timeout=300)

        email_ms = [(m.accepted_at - created[m.alert_id].timestamp()) * 1000 for m in mails if m.alert_id in created]
        sent_at = {i: req["at"] for req in gateway.requests if (i := phones[req["To"]])}
        sms_ms = [(sent_at[i] - created[str(alert_id_for(f"BENCH{run}{i:07d}"))].timestamp()) * 1000 for i in sent_at]
        base = baseline(smtp, 100)

    if not were_running and not args.keep_services:
        stack.down(settings, log=lambda msg: None)

    print(
        f"alert delivery latency, {args.count} BLOCK alerts at {args.rate:g}/s (each: email + SMS in parallel), "
        f"{config.dispatcher.workers} workers, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    )
    print(summary("created_at -> SMTP 250 (email)", email_ms))
    print(summary("created_at -> gateway POST (SMS)", sms_ms))
    print(summary("baseline: SMTP send alone", base))
    print(
        f"ratio p50 {percentile(email_ms, 50) / percentile(base, 50):.1f}x, "
        f"p99 {percentile(email_ms, 99) / percentile(base, 99):.1f}x the bare SMTP send"
    )
    print(f"dispatcher: {result['stats'].line()}" if "stats" in result else "dispatcher did not finish")
    return 0 if len(email_ms) == args.count else 1


if __name__ == "__main__":
    raise SystemExit(main())
