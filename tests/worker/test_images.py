"""arrl.worker.sandbox.images: the self-contained CPU sandbox image, built offline against the local engine.

The cold build (debootstrap, import, docker build) takes about two minutes on 2 cores; the
session fixture builds once and the builder skips an image whose content-hash tag exists.
"""

from __future__ import annotations

import sys
import time
from importlib import metadata



def test_debian_mirror_from_either_sources_format(tmp_path, monkeypatch):
    from arrl.worker.sandbox.images import DEFAULT_MIRROR, debian_mirror

    monkeypatch.delenv("ARRL_DEBIAN_MIRROR", raising=False)
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    assert debian_mirror(apt) == DEFAULT_MIRROR  # nothing configured
    (apt / "sources.list.d" / "other.sources").write_text(
        "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\nComponents: main\n")
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb deb-src\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n")
    assert debian_mirror(apt) == "http://mirror.example/debian"
    (apt / "sources.list").write_text("# a comment\ndeb [arch=amd64] http://old.example/debian bookworm main\n")
    assert debian_mirror(apt) == "http://old.example/debian"  # sources.list is read first
    monkeypatch.setenv("ARRL_DEBIAN_MIRROR", "http://override.example/debian")
    assert debian_mirror(apt) == "http://override.example/debian"


def test_wheel_pins_are_the_venvs_own_versions():
    import torch

    from arrl.worker.sandbox.images import wheel_pins

    pins = wheel_pins()
    assert pins["torch"] == torch.__version__
    assert pins["numpy"] == metadata.version("numpy") and pins["pyarrow"] == metadata.version("pyarrow")
    assert "sympy" in pins and "mpmath" in pins  # torch's requirements, and theirs
    assert "optree" not in pins  # only behind an extra


def test_the_tag_follows_the_recipe(tmp_path, monkeypatch):
    from arrl.worker.sandbox import images

    pins = {"torch": "2.13.0+cpu", "numpy": "2.3.5"}
    tag = images.cpu_sandbox_tag(pins)
    assert tag.startswith("arrl-sandbox:cpu-") and images.cpu_sandbox_tag(dict(pins)) == tag
    assert images.cpu_sandbox_tag({**pins, "numpy": "2.3.4"}) != tag
    copy = tmp_path / "docker" / "sandbox-cpu"
    copy.mkdir(parents=True)
    (copy / "Dockerfile").write_text((images.docker_dir() / "sandbox-cpu" / "Dockerfile").read_text() + "# edit\n")
    monkeypatch.setattr(images, "docker_dir", lambda: tmp_path / "docker")
    assert images.cpu_sandbox_tag(pins) != tag  # a changed Dockerfile builds a new image


def test_cpu_image_is_self_contained(cpu_sandbox_image):
    """No mounts at all: the image's own python3 imports what training needs, at the venv's versions."""
    import numpy
    import pyarrow
    import torch

    from arrl.worker.sandbox.engine import client

    code = ("import sys, os, torch, numpy, pyarrow.parquet; print(torch.__version__, numpy.__version__, "
            f"pyarrow.__version__, sys.executable, os.getuid(), os.getcwd(), os.path.exists({sys.prefix!r}))")
    out = client().containers.run(cpu_sandbox_image, ["python3", "-c", code], network_mode="none", read_only=True,
                                  remove=True).decode().split()
    assert out == [torch.__version__, numpy.__version__, pyarrow.__version__, "/usr/bin/python3", "65534",
                   "/arrl/work", "False"]


def test_build_is_skipped_when_the_tag_exists(cpu_sandbox_image):
    from arrl.worker.sandbox import images
    from arrl.worker.sandbox.engine import client

    c = client()
    t0 = time.monotonic()
    assert images.build_cpu_sandbox(c, progress=False) == cpu_sandbox_image
    assert time.monotonic() - t0 < 10
    assert c.images.get(images.CPU_SANDBOX).id == c.images.get(cpu_sandbox_image).id


def test_tiny_target_trains_in_the_cpu_image(cpu_sandbox_image, shakespeare_dir, tmp_path):
    from arrl import paths
    from arrl.worker.sandbox.docker import DockerSandbox
    from arrl.worker.sandbox.config import SandboxConfig

    box = DockerSandbox(paths.env_dir(), shakespeare_dir, SandboxConfig(budget_s=4.0, grace_s=30.0, memory_mb=3072,
                                                                        threads=1),
                        labels={"arrl.run": "t", "arrl.worker": "img"}, image=cpu_sandbox_image)
    assert box.self_contained
    out = box.run((paths.targets_dir() / "tiny" / "train.py").read_text(), tmp_path / "run")
    assert out.status == "ok", out.message + out.log_tail
    assert 3.0 < out.val_bpb < 8.0 and out.isolation.startswith(f"docker[{cpu_sandbox_image}@")
    assert "steps:" in out.log_tail and out.timings.train_s > 0
    assert not box.client.containers.list(all=True, filters={"label": ["arrl.worker=img"]})


def test_launch_runs_experiments_in_the_configured_image(cpu_sandbox_image, shakespeare_dir, tmp_path, monkeypatch,
                                                        shared_ray):
    """`[workers] image = "arrl-sandbox:cpu"`: the loop's experiments train in the self-contained image."""
    import json
    import sqlite3

    from arrl import config as config_mod
    from arrl.worker.sandbox.engine import client as docker_client
    from arrl.launch import launch

    monkeypatch.setenv("ARRL_DATA_HOME", str(shakespeare_dir.parent))
    edit = ("<<<<<<< SEARCH\nLEARNING_RATE = 3e-3  # peak AdamW learning rate\n=======\n"
            "LEARNING_RATE = 2e-3  # peak AdamW learning rate\n>>>>>>> REPLACE\n")
    cfg = config_mod.from_dict({
        "target": "tiny", "name": "in-image",
        "policy": {"kind": "scripted", "fmt": "search_replace", "group_size": 1, "completions": [edit]},
        "workers": {"count": 1, "gpus_per_worker": 1.0, "sandbox": "docker", "image": "arrl-sandbox:cpu",
                    "budget_s": 2.0, "grace_s": 30.0, "threads": 1},
        "search": {"noise_runs": 1, "confirm": False}, "oracle": {"max_experiments": 1},
        # what this test checks is where the runs train; on a loaded machine (a CI VM once ran this candidate at
        # 4 steps with 17% foreign share, three times) the contention rule would record it `contended` instead of
        # `ok`, which test_contention covers
        "contention": {"check": False}})
    reason, d = launch(cfg, runs=tmp_path / "runs", log=lambda s: None)
    assert reason.startswith("experiment budget reached")
    rows = sqlite3.connect(d / "ledger.sqlite").execute("SELECT status, outcome FROM experiments").fetchall()
    assert [r[0] for r in rows] == ["ok", "ok"]  # the baseline and the edit
    image_id = docker_client().images.get("arrl-sandbox:cpu").id.split(":")[-1][:12]
    assert {json.loads(r[1])["isolation"].split("+")[0] for r in rows} == {f"docker[arrl-sandbox:cpu@{image_id}]"}
