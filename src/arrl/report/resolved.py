"""What a run's unset config fields became ("auto" in its config.json): `arrl config RUN` prints them, and the
trackers are sent them with the config (arrl.track)."""

from __future__ import annotations

from pathlib import Path

from arrl import paths


def resolved_fields(d: Path, cfg) -> dict:
    """What a run's unset fields became (arrl.config.resolve.table): from its target, its profile and the
    placement its ledger recorded; a target or ledger that is gone leaves those fields "auto"."""
    from arrl import target as target_mod
    from arrl.config import resolve
    from arrl.ledger import reader
    from arrl.ops import cores as cores_mod
    from env import profiles

    try:
        tgt = target_mod.load(cfg.target, paths.targets_dir())
        floor = profiles.get(tgt.profile).bpb_floor
    except Exception:  # noqa: BLE001 - a target removed or renamed since the run
        tgt, floor = None, None
    cores = None
    if (d / "ledger.sqlite").is_file():
        with reader.open_read_only(d) as r:
            place = r.meta("placement")
        if place:
            count = lambda spec: len(cores_mod.parse(spec)) if spec else 0  # noqa: E731
            cores = {"all": place.get("cores"), "worker": count((place.get("worker_cores") or [""])[0]),
                     "learner": count(place.get("learner_cores")),
                     "reserved": count(place.get("policy_cores")) if place.get("mode") == "reserved" else 0}
    return resolve.table(cfg, tgt, cores, floor)
