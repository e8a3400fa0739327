"""A worker's scratch folder: removed when the worker closes, swept after an owner that died without closing,
and never taken from a live owner, another host or a folder with no owner."""

from __future__ import annotations

import socket
import subprocess

from arrl.worker import scratch
from arrl.worker.worker import ExperimentWorker

SANDBOX = {"budget_s": 1.0, "grace_s": 5.0, "memory_mb": 512, "threads": 1}


def _folder(base, name: str, owner: str | None):
    d = base / f"arrl-{name}"
    (d / "models").mkdir(parents=True)
    (d / "models" / "000001.pt2").write_bytes(b"\0" * 1024)  # a model kept for the test split
    if owner is not None:
        (d / scratch.OWNER).write_text(owner + "\n")
    return d


def test_a_closed_worker_leaves_no_scratch_folder(tmp_path, monkeypatch):
    base = tmp_path / "scratch"
    monkeypatch.setenv("ARRL_SCRATCH_DIR", str(base))
    w = ExperimentWorker("worker-0", "shakespeare", SANDBOX, backend="simulated", run="r")
    assert w.scratch.parent == base and scratch.owner(w.scratch)[0] == socket.gethostname()
    (w.scratch / "models").mkdir()
    (w.scratch / "models" / "000003.pt2").write_bytes(b"model")
    w.close()
    assert not w.scratch.exists() and list(base.iterdir()) == []
    # a folder the caller gave is the caller's: closing leaves it
    given = tmp_path / "given"
    w = ExperimentWorker("worker-1", "shakespeare", SANDBOX, backend="simulated", scratch=str(given))
    w.close()
    assert given.is_dir()


def test_only_a_dead_owners_folder_on_this_host_is_swept(tmp_path):
    dead_pid = subprocess.Popen(["true"])  # an owner that is gone (reaped)
    dead_pid.wait()
    live = subprocess.Popen(["sleep", "60"])
    host = socket.gethostname()
    try:
        dead = _folder(tmp_path, "worker-0-dead", f"{host} {dead_pid.pid}")
        alive = _folder(tmp_path, "worker-1-alive", f"{host} {live.pid}")
        elsewhere = _folder(tmp_path, "worker-2-other-host", f"{host}-not-this-one {dead_pid.pid}")
        unowned = _folder(tmp_path, "worker-3-no-owner", None)
        garbled = _folder(tmp_path, "worker-4-garbled", "what")
        made = scratch.make("worker-5", tmp_path)  # a new worker sweeps first
        assert not dead.exists()
        assert alive.exists() and elsewhere.exists() and unowned.exists() and garbled.exists() and made.exists()
        assert scratch.sweep(tmp_path) == 0  # nothing more: its own folder and the live one stay
    finally:
        live.kill()
        live.wait()
    assert scratch.sweep(tmp_path) == 1 and not alive.exists()  # its owner is gone now
    assert made.exists()
