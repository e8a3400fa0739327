"""The typed records that cross the Ray boundary between a worker and the driver."""

from __future__ import annotations

import json

import pytest

from arrl.worker.outcome import Outcome, SealedScore, Timings


def test_an_outcome_survives_its_json_record():
    o = Outcome("ok", val_bpb=3.21, message="m", log_tail="tail", timings=Timings(setup_s=1.0, train_s=9.5, wall_s=12.0),
                isolation="bwrap", env_hash="e" * 64, steps=57, tokens=14592, cpu_s=18.0, cpu_share=0.95,
                foreign_share=0.02, cores="0-1", curve=((0.5, 1, 5.5), (1.0, 2, 5.1)))
    back = Outcome.from_dict(json.loads(json.dumps(o.to_dict())))
    assert back == o
    assert back.tokens_per_s == pytest.approx(14592 / 9.5)


def test_an_outcome_record_from_an_older_arrl_still_reads():
    """outcome.json of an older run: fewer fields, and keys this version does not know."""
    back = Outcome.from_dict({"status": "crash", "message": "boom", "timings": {"wall_s": 2.0, "gone_s": 1.0},
                              "retired_field": 1})
    assert back == Outcome("crash", message="boom", timings=Timings(wall_s=2.0))
    with pytest.raises(ValueError, match="unknown outcome status"):
        Outcome.from_dict({"status": "exploded"})


def test_a_sealed_score_is_a_record():
    s = SealedScore("missing", None, "worker-3 does not hold the model of experiment 9")
    assert (s.status, s.test_bpb) == ("missing", None)
