"""The launch config: a TOML file whose every field is optional and checked.

    target = "tiny"                 # a folder under targets/ or a path
    name = "tiny-night-1"           # run name (default: <target>-<date>-<time>)

    [policy]
    kind = "vllm"                   # vllm | external | scripted (a list of completions) | random
                                    # (uniform catalog edits: the random-search baseline)
    model = "smollm2"               # see arrl.policy.models (vllm)
    fmt = "catalog"                 # search_replace | unified_diff | catalog
    group_size = 4                  # proposals per incumbent state
    temperature = 1.0
    max_tokens = 256
    base_url = ""                   # external
    api_key_env = "OPENAI_API_KEY"  # external
    completions = []                # scripted
    num_gpus = -1.0                 # vllm: GPUs of the policy server (-1: 1 when workers have GPUs, else 0)
    seed = 0                        # vllm: the server's sampling seed (and the prompt builder's)

    [workers]
    count = 1
    gpus_per_worker = 0.0           # 1 on GPU clusters; fake GPUs work in tests
    sandbox = "process"             # process | docker | simulated (no training: arrl.worker.sandbox.simulated)
    isolation = "auto"              # process sandbox: auto | bwrap | none
    image = ""                      # docker sandbox: "host" | "arrl-sandbox:cpu" (a local launch builds it) | any
                                    # tag present on the workers' nodes; empty: $ARRL_SANDBOX_IMAGE there, else "host"
    threads = 0                     # torch threads per run (0: the worker's cores, arrl.ops.placement)
    budget_s = 0.0                  # 0: the target's budget
    grace_s = 0.0                   # 0: the target's grace before the hard kill
    memory_mb = 0                   # 0: the target's memory limit

    [placement]                     # which cores each part uses (arrl.ops.placement, docs/LOOP.md "Placement")
    mode = "auto"                   # auto | reserved (policy + learner on cores of their own) | between_runs
                                    # (they use the workers' cores only while no experiment trains) | off
    cores = ""                      # the cores the run may use, e.g. "0-7" ("": all this process may use)
    reserve_cores = 0               # reserved: cores for the policy server and learner (0: 1, or 2 from 16 cores)

    [contention]                    # runs that got far less compute than comparable runs (arrl.driver.contention)
    check = true                    # re-run a contended run instead of scoring it
    max_foreign_share = 0.15        # contended when other processes took more than this share of its cores
    min_ratio = 0.8                 # ... or its tokens/s fell below this fraction of its source's earlier runs
    reruns = 2                      # re-runs of a contended run; contended again after them: status `contended`

    [search]
    noise_runs = 5                  # baseline repeats at start (noise estimate; 3 is too few, docs/LOOP.md)
    margin_z = 2.0                  # acceptance margin in noise standard deviations
    min_sigma = 0.002               # floor of the noise estimate (bpb)
    pool_noise = true               # sigma pools the baselines with every confirmation pair (else baselines only)
    confirm = true                  # re-run a candidate with another seed before accepting
    rerun_repeats = 0               # a repeated source that beats the incumbent unaccepted runs again, up to N runs
    history_k = 32
    early_abort = false             # self-evaluation: stop candidates that trail the incumbent's curve (arrl.worker.abort)
    abort_z = 0.5                   # the gap needed, in the incumbent's run-to-run spreads of training loss
                                    # (0.5 and min_frac 0.2: chosen by `arrl bench abort --grid`, docs/BENCHMARKS.md)
    abort_margin = 0.0              # extra training-loss gap needed
    abort_every = 0.1               # check at each this fraction of the budget
    abort_min_frac = 0.2            # never before this fraction of the budget

    [reward]                        # reward = (incumbent - val_bpb) / sigma, clipped; or a penalty
    clip = 5.0
    edit_failed = -1.0
    rejected = -1.0
    crash = -1.0
    oom = -1.0
    timeout = -1.0
    nan = -1.0
    invalid_metric = -1.0
    aborted = -3.0                  # early abort; what aborted candidates earned when run to the end (bench abort)
    suspicious = -1.0               # a suspicious result that a fresh run did not reproduce
    simplicity = 0.0                # subtracted per added line

    [learner]                       # PPO on the policy's LoRA adapter (kind = "vllm" only; others are frozen)
    enabled = true
    advantage = "group"             # group (relative within a proposal group) | gae (value head, GAE)
    batch_size = 12                 # samples (proposals with rewards) per update: 3 groups of 4; 16 trained
                                    # the default run's only adapter after its last proposal
    epochs = 2                      # passes over each batch
    minibatch_size = 0              # 0: the whole batch per optimizer step
    lr = 2e-4
    value_lr = 1e-3                 # value head (gae)
    clip = 0.2
    kl_coef = 0.05                  # KL to the base model (adapter disabled)
    entropy_coef = 0.0
    vf_coef = 0.5
    gamma = 0.95                    # gae
    lam = 0.95                      # gae
    grad_clip = 1.0                 # global norm (0: off)
    max_staleness = 1               # samples from adapters older than this many versions are dropped
    learn_duplicates = true         # a duplicate (answered from the ledger) is a sample, paid the result it repeats
    group_by = "state"              # group advantages: state (one request's proposals) | incumbent (all for it)
    advantage_scale = 0.0           # group advantages: 0 divides by the group's std and normalises the batch;
                                    # > 0: (reward - group mean) / this, so tiny differences stay tiny
    sync = false                    # true: on-policy; no new proposals while a full batch waits for its update
                                    # and the new adapter's load (workers idle meanwhile; no sample goes stale)
    rank = 16                       # LoRA rank (alpha below); the policy server allows up to max(16, rank)
    alpha = 32.0
    num_learners = 0                # 0: one learner in the learner actor; >1: DDP over that many
    num_gpus = -1.0                 # per learner (-1: 1 when workers have GPUs, else 0); fractions share a GPU
    threads = 0                     # torch threads of the learner (0: torch's default)
    mmap_mb = 4                     # host memory: blocks above this many MB are mapped and given back when freed
                                    # (glibc; 0: the allocator's default, which kept 3x the memory, LEARNER.md)
    seed = 0

    [integrity]                     # results too good to be true (arrl.driver.integrity, docs/SECURITY.md)
    floor_bpb = 0.0                 # val_bpb below this is never believed (0: the profile's bpb_floor)
    max_gain_z = 20.0               # an improvement beyond this many noise sigmas ...
    max_gain_frac = 0.1             # ... and beyond this fraction of the incumbent's val_bpb is `suspicious`
    reproduce_z = 3.0               # a suspicious result is reproduced when a fresh run is within this many
                                    # sigma * sqrt(2) of it

    [oracle]
    max_experiments = 20            # 0: unbounded
    max_wall_s = 0.0
    max_gpu_hours = 0.0
    target_bpb = 0.0                # stop once the incumbent is at or below it (0: off)
    plateau = 0                     # stop after this many experiments without an acceptance (0: off)
    max_failed_edits = 200          # stop after this many edits in a row that trained nothing: failed,
                                    # rejected, or (without count_duplicates) answered from the ledger (0: off)
    count_duplicates = false        # false: max_experiments counts runs that trained, and duplicates count
                                    # toward max_failed_edits; true: duplicates use up max_experiments too

Unknown keys and wrong types are errors that name the field (`ConfigError`).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(Exception):
    """A config file or value is invalid; the message names the field."""


@dataclass
class PolicySection:
    kind: str = "vllm"
    model: str = "smollm2"
    fmt: str = "catalog"
    group_size: int = 4
    temperature: float = 1.0
    max_tokens: int = 256
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    completions: list = field(default_factory=list)
    num_gpus: float = -1.0
    seed: int = 0


@dataclass
class WorkersSection:
    count: int = 1
    gpus_per_worker: float = 0.0
    sandbox: str = "process"
    isolation: str = "auto"
    image: str = ""
    threads: int = 0
    budget_s: float = 0.0
    grace_s: float = 0.0
    memory_mb: int = 0


@dataclass
class PlacementSection:
    mode: str = "auto"
    cores: str = ""
    reserve_cores: int = 0


@dataclass
class ContentionSection:
    check: bool = True
    max_foreign_share: float = 0.15
    min_ratio: float = 0.8
    reruns: int = 2


@dataclass
class SearchSection:
    noise_runs: int = 5
    margin_z: float = 2.0
    min_sigma: float = 0.002
    pool_noise: bool = True
    confirm: bool = True
    rerun_repeats: int = 0
    history_k: int = 32
    early_abort: bool = False
    abort_z: float = 0.5
    abort_margin: float = 0.0
    abort_every: float = 0.1
    abort_min_frac: float = 0.2


@dataclass
class RewardSection:
    clip: float = 5.0
    edit_failed: float = -1.0
    rejected: float = -1.0
    crash: float = -1.0
    oom: float = -1.0
    timeout: float = -1.0
    nan: float = -1.0
    invalid_metric: float = -1.0
    aborted: float = -3.0
    suspicious: float = -1.0
    simplicity: float = 0.0


@dataclass
class LearnerSection:
    enabled: bool = True
    advantage: str = "group"
    batch_size: int = 12
    epochs: int = 2
    minibatch_size: int = 0
    lr: float = 2e-4
    value_lr: float = 1e-3
    clip: float = 0.2
    kl_coef: float = 0.05
    entropy_coef: float = 0.0
    vf_coef: float = 0.5
    gamma: float = 0.95
    lam: float = 0.95
    grad_clip: float = 1.0
    max_staleness: int = 1
    learn_duplicates: bool = True
    group_by: str = "state"
    advantage_scale: float = 0.0
    sync: bool = False
    rank: int = 16
    alpha: float = 32.0
    num_learners: int = 0
    num_gpus: float = -1.0
    threads: int = 0
    mmap_mb: int = 4
    seed: int = 0

    def settings(self, gpus: float) -> dict:
        """The arrl.learner.learner.Learner settings, with num_gpus resolved."""
        d = dataclasses.asdict(self)
        d.pop("enabled")
        d.pop("learn_duplicates")  # which results are samples, and their groups, are the driver's side
        d.pop("group_by")  # (arrl.driver.learning, arrl.learner.trajectory)
        d.pop("sync")  # when the driver asks for proposals (arrl.driver.learning, arrl.driver)
        d["num_gpus"] = gpus
        return d


@dataclass
class IntegritySection:
    floor_bpb: float = 0.0
    max_gain_z: float = 20.0
    max_gain_frac: float = 0.1
    reproduce_z: float = 3.0


@dataclass
class OracleSection:
    max_experiments: int = 20
    max_wall_s: float = 0.0
    max_gpu_hours: float = 0.0
    target_bpb: float = 0.0
    plateau: int = 0
    max_failed_edits: int = 200
    count_duplicates: bool = False


@dataclass
class Config:
    target: str = "tiny"
    name: str = ""
    policy: PolicySection = field(default_factory=PolicySection)
    workers: WorkersSection = field(default_factory=WorkersSection)
    placement: PlacementSection = field(default_factory=PlacementSection)
    contention: ContentionSection = field(default_factory=ContentionSection)
    search: SearchSection = field(default_factory=SearchSection)
    reward: RewardSection = field(default_factory=RewardSection)
    learner: LearnerSection = field(default_factory=LearnerSection)
    integrity: IntegritySection = field(default_factory=IntegritySection)
    oracle: OracleSection = field(default_factory=OracleSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {("policy", "kind"): ("vllm", "external", "scripted", "random"),
           ("policy", "fmt"): ("search_replace", "unified_diff", "catalog"),
           ("workers", "sandbox"): ("process", "docker", "simulated"),
           ("workers", "isolation"): ("auto", "bwrap", "none"),
           ("placement", "mode"): ("auto", "reserved", "between_runs", "off"),
           ("learner", "advantage"): ("group", "gae"),
           ("learner", "group_by"): ("state", "incumbent")}
POSITIVE = {("policy", "group_size"), ("workers", "count"), ("policy", "max_tokens"), ("learner", "batch_size"),
            ("learner", "epochs"), ("learner", "lr"), ("learner", "rank"), ("learner", "alpha"), ("search", "abort_every")}
NON_NEGATIVE = {("search", "noise_runs"), ("search", "rerun_repeats"), ("search", "min_sigma"), ("workers", "gpus_per_worker"),
                ("workers", "threads"), ("workers", "budget_s"), ("workers", "grace_s"), ("workers", "memory_mb"), ("oracle", "max_experiments"),
                ("oracle", "max_wall_s"), ("oracle", "max_gpu_hours"), ("oracle", "target_bpb"),
                ("oracle", "plateau"), ("search", "history_k"), ("oracle", "max_failed_edits"),
                ("learner", "minibatch_size"), ("learner", "value_lr"), ("learner", "clip"), ("learner", "kl_coef"),
                ("learner", "entropy_coef"), ("learner", "vf_coef"), ("learner", "grad_clip"),
                ("learner", "max_staleness"), ("learner", "num_learners"), ("learner", "threads"), ("learner", "mmap_mb"),
                ("learner", "advantage_scale"), ("placement", "reserve_cores"), ("contention", "reruns"),
                ("search", "abort_z"), ("search", "abort_margin"), ("integrity", "floor_bpb"),
                ("integrity", "max_gain_z"), ("integrity", "max_gain_frac"), ("integrity", "reproduce_z")}
UNIT = {("contention", "min_ratio"), ("contention", "max_foreign_share"), ("learner", "gamma"), ("learner", "lam"), ("search", "abort_every"), ("search", "abort_min_frac")}  # within [0, 1]


def _check(value, default, where: str):
    want = type(default)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is bool and not isinstance(value, bool) or want is not bool and isinstance(value, bool):
        raise ConfigError(f"{where}: expected {want.__name__}, got {type(value).__name__} {value!r}")
    if not isinstance(value, want):
        raise ConfigError(f"{where}: expected {want.__name__}, got {type(value).__name__} {value!r}")
    if want is float and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value!r}")
    return value


def from_dict(data: dict, source: str = "config") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table of settings")
    cfg = Config()
    for key, value in data.items():
        if key not in {f.name for f in dataclasses.fields(Config)}:
            raise ConfigError(f"{source}: unknown field {key!r} (fields: "
                              f"{', '.join(f.name for f in dataclasses.fields(Config))})")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [{key}] must be a table, got {type(value).__name__}")
            names = [f.name for f in dataclasses.fields(current)]
            for k, v in value.items():
                where = f"{source}: [{key}] {k}"
                if k not in names:
                    raise ConfigError(f"{where}: unknown field (known: {', '.join(names)})")
                v = _check(v, getattr(current, k), where)
                if (key, k) in CHOICES and v not in CHOICES[(key, k)]:
                    raise ConfigError(f"{where}: {v!r} is not one of {', '.join(CHOICES[(key, k)])}")
                if (key, k) in POSITIVE and v <= 0:
                    raise ConfigError(f"{where}: must be > 0, got {v!r}")
                if (key, k) in NON_NEGATIVE and v < 0:
                    raise ConfigError(f"{where}: must be >= 0, got {v!r}")
                if (key, k) in UNIT and not 0.0 <= v <= 1.0:
                    raise ConfigError(f"{where}: must be within [0, 1], got {v!r}")
                if k == "num_gpus" and v < 0 and v != -1.0:
                    raise ConfigError(f"{where}: must be >= 0, or -1 for automatic, got {v!r}")
                setattr(current, k, v)
        else:
            setattr(cfg, key, _check(value, current, f"{source}: {key}"))
    if cfg.policy.kind == "external" and not cfg.policy.base_url:
        raise ConfigError(f"{source}: [policy] base_url: required when kind = 'external'")
    if cfg.learner.minibatch_size > cfg.learner.batch_size:
        raise ConfigError(f"{source}: [learner] minibatch_size: {cfg.learner.minibatch_size} is larger than "
                          f"batch_size {cfg.learner.batch_size}")
    return cfg


def auto_gpus(value: float, cfg: Config) -> float:
    """A `num_gpus = -1` setting resolved: one GPU when the workers use GPUs, none on a CPU-only run."""
    return value if value >= 0 else (1.0 if cfg.workers.gpus_per_worker > 0 else 0.0)


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read the config file ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from None
    return from_dict(data, str(p))
