"""What a run tells its trackers, derived from the ledger alone: one Item per thing a tracker holds, each with
a key that names it for good ("exp:12", "policy:3"). The outbox (arrl.track.outbox) sends an item once, and
sends it again only where the tracker lost it; a tracker never reads anything but items.

Items, and when they are final (nothing later changes them):
  config       the resolved config, the target and the environment hash (sent at every start; idempotent)
  exp:N        an experiment once its figures are final (arrl.ledger.queries.final_experiments): its edit,
               status, val_bpb, reward, tokens/s, train seconds; its diff and learning curve as files
  test:N       the sealed test split's score of incumbent run N
  accepted:N   an accepted edit: a tag, and the accepted value at its experiment
  policy:V     adapter version V: the learner's figures (reward, KL, clip fraction, ...)
Notices for the webhook are items too (arrl.track.notices).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

EXPERIMENT, VERSION = "experiment", "adapter_version"  # the two axes a step is counted on


@dataclass(frozen=True)
class Item:
    key: str
    kind: str  # config | exp | test | accepted | policy | notice
    axis: str = ""  # EXPERIMENT or VERSION: what `step` counts
    step: int | None = None
    metrics: dict = field(default_factory=dict)  # name -> number, at `step`
    texts: dict = field(default_factory=dict)  # name -> short string (an edit, a status)
    tags: dict = field(default_factory=dict)  # run-level tags it adds
    files: dict = field(default_factory=dict)  # artifact path -> text
    config: dict | None = None  # the resolved config (kind "config")
    text: str = ""  # a notice's message


def derive(store, cfg_dict: dict, skip: frozenset | set = frozenset()) -> list[Item]:
    """Every item the ledger makes final now, oldest first; experiments whose key is in `skip` (every tracker
    holds them) are left out, so their files are not read again on every pass."""
    rows = store.final_experiments()
    items = [_config(cfg_dict, rows)]
    items += [_experiment(store.root, r) for r in rows if f"exp:{r['id']}" not in skip]
    items += [Item(f"test:{r['exp_id']}", "test", EXPERIMENT, r["exp_id"], {"test_bpb": r["test_bpb"]},
                   {"test_status": r["status"]}) for r in store.test_score_rows() if r["test_bpb"] is not None]
    for r in store.accepted_with_summaries():
        note = f"{r['prev_bpb']:.4f} -> {r['val_bpb']:.4f}: {r['summary'] or ''}"[:250]
        items.append(Item(f"accepted:{r['exp_id']}", "accepted", EXPERIMENT, r["exp_id"],
                          {"accepted_bpb": r["val_bpb"]}, tags={f"accepted.{r['exp_id']:04d}": note}))
    items += [_version(v) for v in store.policy_versions()]
    return items


def _config(cfg_dict: dict, rows) -> Item:
    env = _env_hash(rows)
    return Item(f"config:{env[:16]}" if env else "config", "config", config=cfg_dict,
                tags={"arrl.run": cfg_dict.get("name", ""), "arrl.target": str(cfg_dict.get("target", "")),
                      **({"arrl.env_hash": env} if env else {})})


def _env_hash(rows) -> str:
    """The frozen environment's hash, as the first finished run recorded it ("" before one has)."""
    for r in rows:
        env = json.loads(r["outcome"] or "{}").get("env_hash")
        if env:
            return env
    return ""


def _experiment(root: Path, r) -> Item:
    m = {"val_bpb": r["val_bpb"], "reward": r["reward"], "tokens_per_s": r["tokens_per_s"], "train_s": r["train_s"],
         "ok": 1.0 if r["status"] == "ok" else 0.0}
    texts = {"kind": r["kind"], "status": r["status"] or "", "edit": (r["summary"] or "")[:500]}
    if r["incumbent_id"] is not None:
        texts["parent"] = str(r["incumbent_id"])
    files = {}
    d = root / "experiments" / f"{r['id']:06d}"
    if r["diff"]:
        files[f"experiments/{r['id']:06d}/diff.patch"] = r["diff"]
    curve = d / "curve.json"
    if curve.is_file():
        files[f"experiments/{r['id']:06d}/curve.json"] = curve.read_text()
    return Item(f"exp:{r['id']}", "exp", EXPERIMENT, r["id"], {k: v for k, v in m.items() if v is not None},
                texts, files=files)


def _version(v: dict) -> Item:
    m = {"reward_mean": v.get("reward_mean"), "advantage_abs_mean": v.get("advantage_abs_mean"),
         "samples": v.get("samples_in"), "dropped_stale": v.get("dropped_stale"), "update_s": v.get("update_s")}
    for k, x in (v.get("metrics") or {}).items():
        m[k] = x
    return Item(f"policy:{v['version']}", "policy", VERSION, v["version"],
                {f"learner/{k}": float(x) for k, x in m.items() if isinstance(x, (int, float)) and x is not None})
