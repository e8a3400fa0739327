"""A process's identity survives a step of the wall clock (a VM paused, forked or migrated)."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

from arrl.ops import procs
from arrl.policy.vllm_server import owner_gone


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the boot time behind create_time is Linux's btime")
def test_a_step_of_the_wall_clock_is_not_the_owner_dying(monkeypatch):
    me = os.getpid()
    t = procs.started(me)
    before = psutil.Process(me).create_time()
    # a stepped clock moves /proc/stat's btime, and psutil adds it to every create_time
    real = psutil._pslinux.boot_time
    monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: real() + 3.0)
    assert psutil.Process(me).create_time() == pytest.approx(before + 3.0)  # what the vLLM guard used to compare
    assert procs.started(me) == t
    assert not owner_gone(me, t)
    # a real exit is still seen: the process is gone, or its pid belongs to a process started later
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    started = procs.started(child.pid)
    assert not owner_gone(child.pid, started)
    child.wait()
    assert owner_gone(child.pid, started)
    assert owner_gone(me, t - 1.0)
