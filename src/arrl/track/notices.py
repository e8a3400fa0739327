"""What the webhook is told ([track] notify), derived from the ledger like every other item
(arrl.track.items): an accepted edit, the run's stop with its reason, and a run that needs attention.

Attention means one of:
  - `crash_streak` candidates in a row ended crash, oom, timeout or nan (one notice per streak, when it
    reaches the count);
  - the learner died and was restarted, or could not be and the run goes on with its adapter frozen;
  - the noise sigma warning (arrl.driver.noise.warning) was raised.
Each notice's key names its ledger row, so a resumed run sends none twice that the webhook took.
"""

from __future__ import annotations

import json

from arrl.ledger.queries import NOT_RUN
from arrl.track.items import Item

CRASHES = ("crash", "oom", "timeout", "nan")
ATTENTION_EVENTS = ("learner_restarted", "learner_frozen", "sigma_warning")


def derive(store, run: str, notify: list, crash_streak: int) -> list[Item]:
    out: list[Item] = []
    if "accepted" in notify:
        for r in store.accepted_with_summaries():
            out.append(_notice(f"accepted:{r['exp_id']}", run,
                               f"accepted exp {r['exp_id']}: val_bpb {r['prev_bpb']:.4f} -> {r['val_bpb']:.4f} "
                               f"({r['val_bpb'] - r['prev_bpb']:+.4f}); {r['summary'] or ''}"))
    if "attention" in notify:
        out += _streaks(store, run, crash_streak)
        for e in store.events_of(ATTENTION_EVENTS):
            out.append(_notice(f"event:{e['id']}", run, _attention_text(e["kind"], json.loads(e["data"] or "{}"))))
    if "stopped" in notify:
        for e in store.events_of(("stopped",)):
            reason = json.loads(e["data"] or "{}").get("reason") or "?"
            best = store.accepted_with_summaries()
            value = f"best val_bpb {best[-1]['val_bpb']:.4f}" if best else "nothing accepted"
            out.append(_notice(f"stopped:{e['id']}", run,
                               f"stopped: {reason}; {value}, {len(best)} accepted edit(s)"))
    return out


def _notice(key: str, run: str, text: str) -> Item:
    return Item(f"notice:{key}", "notice", text=f"arrl {run}: {text}"[:1000])


def _streaks(store, run: str, k: int) -> list[Item]:
    """A notice at the k-th candidate of each unbroken streak of crashes, in the order they finished."""
    out, streak = [], 0
    rows = sorted(store.final_experiments(), key=lambda r: (r["finished"] or 0, r["id"]))
    for r in rows:
        if r["kind"] != "candidate" or r["reused_from"] is not None or r["status"] in NOT_RUN:
            continue
        streak = streak + 1 if r["status"] in CRASHES else 0
        if streak == k:
            out.append(_notice(f"crashes:{r['id']}", run,
                               f"needs attention: {k} candidates in a row crashed (the last: exp {r['id']}, "
                               f"{r['status']}: {(r['message'] or '')[:200]})"))
    return out


def _attention_text(kind: str, data: dict) -> str:
    if kind == "learner_restarted":
        return (f"needs attention: the learner died and was restarted (restart {data.get('restarts')}, adapter "
                f"v{data.get('version')})")
    if kind == "learner_frozen":
        return f"needs attention: the learner is down and the policy is frozen ({data.get('reason', '')})"
    return f"needs attention: {data.get('warning', kind)}"
