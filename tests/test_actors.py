"""The PolicyServer as a Ray actor on a real local Ray: adapter bytes arrive through the object store."""

from __future__ import annotations

import psutil
import pytest
import ray

from arrl import actors, paths, target
from arrl.policy.server import PolicyConfig
from arrl.policy.client import Sampling
from arrl.policy.adapters import adapter_files
from arrl.policy.prompt import PolicyState


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def test_policy_actor_loads_adapter_bytes_from_the_object_store(local_ray, tiny_model, make_adapter, tmp_path):
    t = target.load("tiny", paths.targets_dir())
    cfg = PolicyConfig(model=str(tiny_model), sampling=Sampling(temperature=0.0, max_tokens=16))
    policy = actors.policy_server(cfg, run="t1", num_gpus=0)
    assert ray.get_actor("arrl/t1/policy") is not None
    st = PolicyState(target=t.name, program="brief", source=t.source())
    before = ray.get(policy.propose.remote(st, 1))[0]
    assert before.adapter_version == 0 and before.learnable

    # The adapter travels as bytes; the actor writes them to its own disk (no shared filesystem).
    ref = ray.put(adapter_files(make_adapter(tiny_model, tmp_path / "a", zero=False)))
    swap_s = ray.get(policy.load_adapter.remote(1, ref))
    assert swap_s > 0
    after = ray.get([policy.propose.remote(st, 1) for _ in range(3)])
    assert all(p[0].adapter_version == 1 for p in after)
    assert after[0][0].token_ids != before.token_ids
    live = ray.get(policy.__ray_call__.remote(lambda self: repr(self)))
    assert live.startswith("PolicyServer(") and live.endswith(", gpu=-, v1, up, restarts=0)"), live

    # Killing the actor takes its vLLM server (and the engine under it) down with it.
    pid = ray.get(policy.pid.remote())
    server = psutil.Process(pid)
    family = [server.parent(), server, *server.children(recursive=True)]
    ray.kill(policy)
    gone, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, [p.cmdline()[:3] for p in alive]


def test_waiting_for_an_actor_prints_one_line_where_stderr_is_a_file(local_ray, capsys):
    """`arrl launch > log`: no carriage-return progress frames run together in the log, one line instead."""
    @ray.remote
    def slow():
        import time

        time.sleep(1.5)
        return 7

    assert actors.wait_for(slow.remote(), "thing starting", progress=True) == 7
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("thing starting") == 1 and "ready after" in err, repr(err)
