"""The API's one-row feature fold equals the stream's frame fold (models.features.add_features)
on the same saved profiles: the API calls the folds directly for speed, and this holds its
few lines of glue to the frame path's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from txmon.ingestion.events import validate_event
from txmon.models.features import MemoryProfileStore, add_features, transactions_frame
from txmon.webapp.api.scorer import Profiles, feature_row, frame_feature_row


def _events():
    """A payer's and payee's short history plus one more event, with geo, devices, a failure."""
    start = datetime(2026, 1, 5, 22, 0, tzinfo=UTC)
    out = []
    for i in range(12):
        out.append(
            validate_event(
                {
                    "schema_version": 1,
                    "txn_id": f"feat-{i:05d}",
                    "event_time": (start + timedelta(minutes=7 * i)).isoformat(),
                    "channel": "UPI",
                    "txn_type": "P2P",
                    "payer": {"account_number": f"1111222233{i % 2}"},
                    "payee": {"vpa": f"shop{i % 3}@okaxis"} if i % 4 else {"account_number": "999988887777"},
                    "amount_paise": 10_000 + 3_700 * i,
                    "currency": "INR",
                    "device_id": f"dev-{i % 3}",
                    **({"geo": {"city": "Pune", "lat": 18.5 + i / 10, "lon": 73.8}} if i % 5 else {}),
                    "status": "FAILED" if i == 6 else "SUCCESS",
                },
                now=start + timedelta(days=1),
            )
        )
    return out


def test_one_row_fold_equals_the_frame_fold_after_history():
    events = _events()
    store = MemoryProfileStore(
        fraud_labels={
            "shop2@okaxis": [
                (int(events[2].event_time.timestamp() * 1e6) + 5, int(events[2].event_time.timestamp() * 1e6))
            ]
        }
    )
    add_features(transactions_frame(events[:-1]), store)  # the history, saved as the stream saves it
    last = events[-1]
    payee = last.payee.account_number or last.payee.vpa
    profiles = Profiles(
        payer=store.profiles.get(("payer", last.payer.account_number)),
        payee=store.profiles.get(("payee", payee)),
        frauds=tuple(store.fraud_label_times([payee]).get(payee, [])),
    )
    assert profiles.payer is not None and profiles.payee is not None
    fast, reference = feature_row(last, profiles), frame_feature_row(last, profiles)
    assert fast == reference
    assert fast["payer_history_count"] > 0 and fast["payee_fraud_reports"] == 1


def test_one_row_fold_equals_the_frame_fold_for_a_new_account():
    last = _events()[0]
    assert feature_row(last, Profiles()) == frame_feature_row(last, Profiles())
