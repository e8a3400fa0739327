"""Shared fixtures: prepared data for both profiles, built once per session on real files, and one
local Ray for the tests that launch in-process (`shared_ray`).

The web profile is prepared from a real HTTP server on 127.0.0.1 (tests/webserver.py)
serving small Parquet shards that the fixture writes; nothing leaves the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("OMP_NUM_THREADS", "2")

import tiers  # noqa: E402,F401 - checks ARRL_TEST_TIER before anything runs
import webserver  # noqa: E402


@pytest.fixture(scope="session")
def shakespeare_dir(tmp_path_factory) -> Path:
    from env import prepare

    d = tmp_path_factory.mktemp("data") / "shakespeare"
    prepare.prepare("shakespeare", d)
    return d


@pytest.fixture(scope="session")
def web_fixture(tmp_path_factory):
    """(served directory, base URL): two training shards, a validation shard (9) and a test shard (8)."""
    served = tmp_path_factory.mktemp("served")
    webserver.write_shards(served, n_train=2, val_index=9)
    # the test shard: written like a validation shard, with other text, and added to SHA256SUMS
    extra = tmp_path_factory.mktemp("served-test")
    sums = webserver.write_shards(extra, n_train=0, val_index=8, seed=1)
    (served / "shard_00008.parquet").write_bytes((extra / "shard_00008.parquet").read_bytes())
    with open(served / "SHA256SUMS", "a") as f:
        f.write(f"{sums['shard_00008.parquet']}  shard_00008.parquet\n")
    with webserver.serve(served) as url:
        yield served, url


@pytest.fixture(scope="session")
def web_dir(tmp_path_factory, web_fixture) -> Path:
    from env import prepare, web

    _, url = web_fixture
    d = tmp_path_factory.mktemp("data") / "web"
    prepare.prepare("web", d, source=web.Source(base_url=url, train_shards=2, val_index=9, test_index=8),
                    progress=False, shard_tokens=200_000)
    return d


@pytest.fixture
def profile_env(monkeypatch):
    """Point env.runtime at a prepared data dir, as the sandbox would."""
    def use(data_dir: Path, work_dir: Path):
        monkeypatch.setenv("ARRL_DATA_DIR", str(data_dir))
        monkeypatch.setenv("ARRL_WORK_DIR", str(work_dir))
    return use


@pytest.fixture
def make_target(tmp_path):
    """Write a target folder (target.toml + train.py) and load it."""
    def make(toml: str, train: str):
        from arrl import target

        d = tmp_path / "target"
        d.mkdir(exist_ok=True)
        (d / "target.toml").write_text(toml)
        (d / "train.py").write_text(train)
        return target.load(d, tmp_path)
    return make


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny random Llama policy model with its byte-level tokenizer, built once."""
    from arrl.policy import models

    return models.build_tiny(tmp_path_factory.mktemp("models") / "tiny-random")


@pytest.fixture(scope="session")
def make_adapter():
    """make_adapter(model_dir, out, zero, rank=16, seed=0): a PEFT LoRA adapter saved in `out`,
    with B = 0 (`zero`: the adapted model equals the base) or random A and B."""
    from arrl.policy import models

    return lambda model_dir, out, zero, rank=16, seed=0: models.lora_adapter(model_dir, out, rank,
                                                                           0.0 if zero else 0.3, seed)


@pytest.fixture(scope="session")
def cpu_sandbox_image(docker_host) -> str:
    """The self-contained CPU sandbox image `arrl-sandbox:cpu-<hash>`, built offline once per session
    (about two minutes cold on 2 cores; found in a fraction of a second when its tag exists)."""
    import sys
    import time

    from arrl.worker.sandbox import images
    from arrl.worker.sandbox.engine import client

    t0 = time.monotonic()
    tag = images.build_cpu_sandbox(client(), progress=True)
    print(f"{tag} ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return tag


@pytest.fixture(scope="session")
def docker_host():
    """Start (or find) an engine; skip only where none can be started at all (not root, no apt)."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "dockerd.sh"), "start"], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        if os.geteuid() != 0:
            pytest.skip(f"no Docker engine can be started here: {proc.stderr.strip()[-300:]}")
        pytest.fail(f"scripts/dockerd.sh start failed: {proc.stderr[-1000:]}")
    host = proc.stdout.strip().split("=", 1)[1]
    os.environ["DOCKER_HOST"] = host
    return host


# ---- one Ray for in-process launches ------------------------------------------------------------------------------
# `launch()` uses a Ray that is already up (as under `ray job submit`) and starts and stops its own otherwise,
# which costs about 5 s a launch on 2 cores. Tests that launch in-process ask for `shared_ray`; it stays up
# across consecutive such tests and is shut down before any other test, so a test with a Ray of its own (or a
# launch in a subprocess, timed against its own Ray) never runs beside it.
_RAY = {"up": False}
SHARED_CPUS, SHARED_GPUS = 12, 8  # fake resources: the largest test config has 8 workers of 1 GPU each


@pytest.fixture
def shared_ray():
    import ray

    if not _RAY["up"]:
        ray.init(address="local", num_cpus=SHARED_CPUS, num_gpus=SHARED_GPUS, logging_level="ERROR",
                 log_to_driver=False)
        _RAY["up"] = True
    yield
    # a launch kills its actors as it ends; the next test may use the same run name, so wait until the names
    # are free (ray.kill returns before the actor is gone)
    import time
    from ray.util import list_named_actors

    deadline = time.monotonic() + 30
    while list_named_actors(all_namespaces=True) and time.monotonic() < deadline:
        time.sleep(0.2)


def _stop_shared_ray():
    if _RAY["up"]:
        import ray

        ray.shutdown()
        _RAY["up"] = False


@pytest.fixture(autouse=True)
def _shared_ray_only_where_asked(request):
    if "shared_ray" not in request.fixturenames:
        _stop_shared_ray()


def pytest_sessionfinish(session, exitstatus):
    _stop_shared_ray()
