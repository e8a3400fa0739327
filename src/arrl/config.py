"""The launch config: a TOML file whose every field is optional and checked.

Each field is declared once, below, with its type, default, unit, allowed values and a one-line
doc (`knob`). The TOML reference, docs/CONFIG.md, is generated from those declarations
(`python -m arrl.config` writes it; a test checks it is current), and `arrl config [RUN|FILE]`
prints the config a run resolved to, every field with its doc. A top-level `target` names a folder
under targets/ or a path; `name` is the run's name (default: <target>-<date>-<time>).

Unknown keys and wrong types are errors that name the field (`ConfigError`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list}
CHECKS = {"positive": ("must be > 0", lambda v: v > 0),
          "non_negative": ("must be >= 0", lambda v: v >= 0),
          "unit": ("must be within [0, 1]", lambda v: 0.0 <= v <= 1.0),
          "gpus": ("must be >= 0, or -1 for automatic", lambda v: v >= 0 or v == -1.0)}


class ConfigError(Exception):
    """A config file or value is invalid; the message names the field."""


def knob(default, doc: str, *, unit: str = "", choices: tuple = (), check: str | tuple = ()):
    """A config field: its default, a one-line doc, its unit, the values it may take and the checks it must
    pass (keys of CHECKS). The docs and `arrl config` read these; `from_dict` enforces them."""
    meta = {"doc": doc, "unit": unit, "choices": tuple(choices), "checks": (check,) if isinstance(check, str) else check}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class PolicySection:
    """[policy]"""

    kind: str = knob('vllm',
                     'vllm | external | scripted (a list of completions) | random (uniform catalog edits: the '
                     'random-search baseline)',
                     choices=('vllm', 'external', 'scripted', 'random'))
    model: str = knob('smollm2', 'see arrl.policy.models (vllm)')
    fmt: str = knob('catalog',
                    'search_replace | unified_diff | catalog',
                    choices=('search_replace', 'unified_diff', 'catalog'))
    group_size: int = knob(4, 'proposals per incumbent state', check='positive')
    temperature: float = knob(1.0, 'sampling temperature')
    max_tokens: int = knob(256, 'largest completion per proposal', check='positive')
    base_url: str = knob('', 'external: the OpenAI-compatible endpoint')
    api_key_env: str = knob('OPENAI_API_KEY', 'external: the environment variable holding its API key')
    completions: list = knob([], 'scripted: the completions, answered in order, cycling')
    num_gpus: float = knob(-1.0, 'vllm: GPUs of the policy server (-1: 1 when workers have GPUs, else 0)', check='gpus')
    seed: int = knob(0, "vllm: the server's sampling seed (and the prompt builder's)")


@dataclass
class WorkersSection:
    """[workers]"""

    count: int = knob(1, 'experiment workers (one GPU each where gpus_per_worker = 1)', check='positive')
    gpus_per_worker: float = knob(0.0, '1 on GPU clusters; fake GPUs work in tests', check='non_negative')
    sandbox: str = knob('process',
                        'process | docker | simulated (no training: arrl.worker.sandbox.simulated)',
                        choices=('process', 'docker', 'simulated'))
    isolation: str = knob('auto', 'process sandbox: auto | bwrap | none', choices=('auto', 'bwrap', 'none'))
    image: str = knob('',
                      'docker sandbox: "host" | "arrl-sandbox:cpu" (a local launch builds it) | any tag present '
                      'on the workers\' nodes; empty: $ARRL_SANDBOX_IMAGE there, else "host"')
    threads: int = knob(0, "torch threads per run (0: the worker's cores, arrl.ops.placement)", check='non_negative')
    budget_s: float = knob(0.0, "training budget of each run (0: the target's budget)", unit='s', check='non_negative')
    grace_s: float = knob(0.0,
                          "extra seconds before the hard kill (0: the target's grace)",
                          unit='s', check='non_negative')
    memory_mb: int = knob(0, "memory of a run's process tree (0: the target's limit)", unit='MB', check='non_negative')


@dataclass
class PlacementSection:
    """[placement] which cores each part uses (arrl.ops.placement, docs/LOOP.md "Placement")"""

    mode: str = knob('auto',
                     'auto | reserved (policy + learner on cores of their own) | between_runs (they use the '
                     "workers' cores only while no experiment trains) | off",
                     choices=('auto', 'reserved', 'between_runs', 'off'))
    cores: str = knob('', 'the cores the run may use, e.g. "0-7" ("": all this process may use)')
    reserve_cores: int = knob(0,
                              'reserved: cores for the policy server and learner (0: 1, or 2 from 16 cores)',
                              check='non_negative')


@dataclass
class ContentionSection:
    """[contention] runs that got far less compute than comparable runs (arrl.driver.contention)"""

    check: bool = knob(True, 're-run a contended run instead of scoring it')
    max_foreign_share: float = knob(0.15,
                                    'contended when other processes took more than this share of its cores',
                                    check='unit')
    min_ratio: float = knob(0.8,
                            "... or its tokens/s fell below this fraction of its source's earlier runs",
                            check='unit')
    reruns: int = knob(2,
                       're-runs of a contended run; contended again after them: status `contended`',
                       check='non_negative')


@dataclass
class SearchSection:
    """[search]"""

    noise_runs: int = knob(5,
                           'baseline repeats at start (noise estimate; 3 is too few, docs/LOOP.md)',
                           check='non_negative')
    margin_z: float = knob(2.0, 'acceptance margin in noise standard deviations', unit='sigma')
    min_sigma: float = knob(0.002, 'floor of the noise estimate (bpb)', unit='bpb', check='non_negative')
    pool_noise: bool = knob(True, 'sigma pools the baselines with every confirmation pair (else baselines only)')
    confirm: bool = knob(True, 're-run a candidate with another seed before accepting')
    rerun_repeats: int = knob(0,
                              'a repeated source that beats the incumbent unaccepted runs again, up to N runs',
                              check='non_negative')
    history_k: int = knob(32, 'finished candidates shown to the policy in its prompt', check='non_negative')
    early_abort: bool = knob(False,
                             "self-evaluation: stop candidates that trail the incumbent's curve "
                             '(arrl.worker.abort)')
    abort_z: float = knob(0.5,
                          "the gap needed, in the incumbent's run-to-run spreads of training loss (0.5 and "
                          'min_frac 0.2: chosen by `arrl bench abort --grid`, docs/BENCHMARKS.md)',
                          check='non_negative')
    abort_margin: float = knob(0.0, 'extra training-loss gap needed', check='non_negative')
    abort_every: float = knob(0.1, 'check at each this fraction of the budget', check=('positive', 'unit'))
    abort_min_frac: float = knob(0.2, 'never before this fraction of the budget', check='unit')


@dataclass
class RewardSection:
    """[reward] reward = (incumbent - val_bpb) / sigma, clipped; or a penalty"""

    clip: float = knob(5.0, 'the improvement reward is clipped to +-clip noise sigmas')
    edit_failed: float = knob(-1.0, 'penalty: the edit did not apply')
    rejected: float = knob(-1.0, 'penalty: the static edit policy refused it')
    crash: float = knob(-1.0, 'penalty: the run crashed')
    oom: float = knob(-1.0, 'penalty: the run exceeded its memory')
    timeout: float = knob(-1.0, 'penalty: the run outlived budget + grace')
    nan: float = knob(-1.0, 'penalty: non-finite loss or logits')
    invalid_metric: float = knob(-1.0, 'penalty: no usable model or metric')
    aborted: float = knob(-3.0, 'early abort; what aborted candidates earned when run to the end (bench abort)')
    suspicious: float = knob(-1.0, 'a suspicious result that a fresh run did not reproduce')
    simplicity: float = knob(0.0, 'subtracted per added line')


@dataclass
class LearnerSection:
    """[learner] PPO on the policy's LoRA adapter (kind = "vllm" only; others are frozen)"""

    enabled: bool = knob(True, 'train the policy\'s adapter (kind = "vllm" only)')
    advantage: str = knob('group',
                          'group (relative within a proposal group) | gae (value head, GAE)',
                          choices=('group', 'gae'))
    batch_size: int = knob(12,
                           'samples (proposals with rewards) per update: 3 groups of 4; 16 trained the default '
                           "run's only adapter after its last proposal",
                           check='positive')
    epochs: int = knob(2, 'passes over each batch', check='positive')
    minibatch_size: int = knob(0, 'samples per optimizer step (0: the whole batch)', check='non_negative')
    lr: float = knob(0.0002, 'learning rate of the LoRA adapter', check='positive')
    value_lr: float = knob(0.001, 'value head (gae)', check='non_negative')
    clip: float = knob(0.2, "PPO's ratio clip", check='non_negative')
    kl_coef: float = knob(0.05, 'KL to the base model (adapter disabled)', check='non_negative')
    entropy_coef: float = knob(0.0, 'entropy bonus', check='non_negative')
    vf_coef: float = knob(0.5, 'value loss weight (gae)', check='non_negative')
    gamma: float = knob(0.95, 'gae', check='unit')
    lam: float = knob(0.95, 'gae', check='unit')
    grad_clip: float = knob(1.0, 'global norm (0: off)', check='non_negative')
    max_staleness: int = knob(1,
                              'samples from adapters older than this many versions are dropped',
                              check='non_negative')
    learn_duplicates: bool = knob(True,
                                  'a duplicate (answered from the ledger) is a sample, paid the result it repeats')
    group_by: str = knob('state',
                         "group advantages: state (one request's proposals) | incumbent (all for it)",
                         choices=('state', 'incumbent'))
    advantage_scale: float = knob(0.0,
                                  "group advantages: 0 divides by the group's std and normalises the batch; > 0: "
                                  '(reward - group mean) / this, so tiny differences stay tiny',
                                  check='non_negative')
    sync: bool = knob(False,
                      'true: on-policy; no new proposals while a full batch waits for its update and the new '
                      "adapter's load (workers idle meanwhile; no sample goes stale)")
    rank: int = knob(16, 'LoRA rank (alpha below); the policy server allows up to max(16, rank)', check='positive')
    alpha: float = knob(32.0, 'LoRA alpha', check='positive')
    num_learners: int = knob(0, '0: one learner in the learner actor; >1: DDP over that many', check='non_negative')
    num_gpus: float = knob(-1.0,
                           'per learner (-1: 1 when workers have GPUs, else 0); fractions share a GPU',
                           check='gpus')
    threads: int = knob(0, "torch threads of the learner (0: torch's default)", check='non_negative')
    mmap_mb: int = knob(4,
                        'host memory: blocks above this many MB are mapped and given back when freed (glibc; 0: '
                        "the allocator's default, which kept 3x the memory, LEARNER.md)",
                        unit='MB', check='non_negative')
    seed: int = knob(0, "the learner's seed")

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
    """[integrity] results too good to be true (arrl.driver.integrity, docs/SECURITY.md)"""

    floor_bpb: float = knob(0.0,
                            "val_bpb below this is never believed (0: the profile's bpb_floor)",
                            unit='bpb', check='non_negative')
    max_gain_z: float = knob(20.0,
                             'an improvement beyond this many noise sigmas ...',
                             unit='sigma', check='non_negative')
    max_gain_frac: float = knob(0.1,
                                "... and beyond this fraction of the incumbent's val_bpb is `suspicious`",
                                check='non_negative')
    reproduce_z: float = knob(3.0,
                              'a suspicious result is reproduced when a fresh run is within this many sigma * '
                              'sqrt(2) of it',
                              unit='sigma', check='non_negative')


@dataclass
class OracleSection:
    """[oracle]"""

    max_experiments: int = knob(20, 'stop after this many experiments (0: unbounded)', check='non_negative')
    max_wall_s: float = knob(0.0, 'stop after this many wall seconds (0: off)', unit='s', check='non_negative')
    max_gpu_hours: float = knob(0.0,
                                'stop after this many GPU hours of experiments (0: off)',
                                unit='h', check='non_negative')
    target_bpb: float = knob(0.0,
                             'stop once the incumbent is at or below it (0: off)',
                             unit='bpb', check='non_negative')
    plateau: int = knob(0, 'stop after this many experiments without an acceptance (0: off)', check='non_negative')
    max_failed_edits: int = knob(200,
                                 'stop after this many edits in a row that trained nothing: failed, rejected, or '
                                 '(without count_duplicates) answered from the ledger (0: off)',
                                 check='non_negative')
    count_duplicates: bool = knob(False,
                                  'false: max_experiments counts runs that trained, and duplicates count toward '
                                  'max_failed_edits; true: duplicates use up max_experiments too')


@dataclass
class Config:
    target: str = knob("tiny", "a folder under targets/ or a path")
    name: str = knob("", "run name (default: <target>-<date>-<time>)")
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


def _type(f: dataclasses.Field) -> type:
    return TYPES[str(f.type).split("|")[0].strip()]


def _check(value, f: dataclasses.Field, where: str):
    want = _type(f)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if want is bool and not isinstance(value, bool) or want is not bool and isinstance(value, bool):
        raise ConfigError(f"{where}: expected {want.__name__}, got {type(value).__name__} {value!r}")
    if not isinstance(value, want):
        raise ConfigError(f"{where}: expected {want.__name__}, got {type(value).__name__} {value!r}")
    if want is float and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value!r}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    for check in f.metadata.get("checks", ()):
        if not CHECKS[check][1](value):
            raise ConfigError(f"{where}: {CHECKS[check][0]}, got {value!r}")
    return value


def field_type(section: str, name: str) -> type:
    """The Python type of a field (`section` "" for the top level)."""
    cls = type(getattr(Config(), section)) if section else Config
    return _type(next(f for f in dataclasses.fields(cls) if f.name == name))


def from_dict(data: dict, source: str = "config") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table of settings")
    cfg = Config()
    top = {f.name: f for f in dataclasses.fields(Config)}
    for key, value in data.items():
        if key not in top:
            raise ConfigError(f"{source}: unknown field {key!r} (fields: {', '.join(top)})")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [{key}] must be a table, got {type(value).__name__}")
            fields = {f.name: f for f in dataclasses.fields(current)}
            for k, v in value.items():
                where = f"{source}: [{key}] {k}"
                if k not in fields:
                    raise ConfigError(f"{where}: unknown field (known: {', '.join(fields)})")
                setattr(current, k, _check(v, fields[k], where))
        else:
            setattr(cfg, key, _check(value, top[key], f"{source}: {key}"))
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


# -- the reference: TOML with every field's doc ---------------------------------------------------
def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # strings and lists of strings read back as TOML


def _line(f: dataclasses.Field, value) -> str:
    m = f.metadata
    notes = [m["doc"]] + ([f"unit: {m['unit']}"] if m.get("unit") else [])
    return f"{f.name} = {_toml(value)}  # " + "; ".join(notes)


def to_toml(cfg: Config) -> str:
    """`cfg` as a TOML file: every field, each with its doc as a comment; `load` reads it back."""
    lines = []
    for f in dataclasses.fields(Config):
        value = getattr(cfg, f.name)
        if not dataclasses.is_dataclass(value):
            lines.append(_line(f, value))
    for f in dataclasses.fields(Config):
        section = getattr(cfg, f.name)
        if dataclasses.is_dataclass(section):
            doc = (type(section).__doc__ or "").strip()
            lines += ["", doc if doc.startswith("[") else f"[{f.name}]"]
            lines[-1] = f"[{f.name}]" + (f"  # {doc.split(']', 1)[1].strip()}" if "] " in doc else "")
            lines += [_line(g, getattr(section, g.name)) for g in dataclasses.fields(section)]
    return "\n".join(lines) + "\n"


def reference() -> str:
    """docs/CONFIG.md: the defaults as TOML, every field documented."""
    return ("# The launch config\n\nGenerated from `src/arrl/config.py` by `python -m arrl.config`; do not edit. Every "
            "field is optional: the value shown is the default. Unknown keys and wrong types are one-line errors "
            "naming the field. `arrl config RUN` prints the config a run used in the same form.\n\n```toml\n"
            + to_toml(Config()) + "```\n")


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md"
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if out.read_text() == reference() else f"{out} is out of date: run `python -m arrl.config`")
    out.write_text(reference())
    print(out)
