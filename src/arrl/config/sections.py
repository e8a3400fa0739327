"""The config's sections: every field of the launch config, each declared once with `knob`
(arrl.config.fields): type, default, unit, allowed values, checks and a one-line doc."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from arrl.config.fields import knob

AUTO, OFF = "auto", "off"


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
    num_gpus: float | None = knob(None, 'vllm: GPUs of the policy server', check='non_negative',
                                  unset=(AUTO, '1 when the workers have GPUs, else 0'), legacy=-1.0)
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
    image: str | None = knob(None,
                             'docker sandbox: "host" | "arrl-sandbox:cpu" (a local launch builds it) | any tag '
                             "present on the workers' nodes",
                             unset=(AUTO, '$ARRL_SANDBOX_IMAGE on the worker\'s node, else "host"'), legacy='')
    threads: int | None = knob(None, 'torch threads per run', check='positive',
                               unset=(AUTO, "the worker's cores (arrl.ops.placement)"), legacy=0)
    budget_s: float | None = knob(None, 'training budget of each run', unit='s', check='positive',
                                  unset=(AUTO, "the target's budget"), legacy=0.0)
    grace_s: float | None = knob(None, 'extra seconds before the hard kill', unit='s', check='positive',
                                 unset=(AUTO, "the target's grace"), legacy=0.0)
    memory_mb: int | None = knob(None, "memory of a run's process tree", unit='MB', check='positive',
                                 unset=(AUTO, "the target's limit"), legacy=0)


@dataclass
class PlacementSection:
    """[placement] which cores each part uses (arrl.ops.placement, docs/LOOP.md "Placement")"""

    mode: str = knob('auto',
                     'auto | reserved (policy + learner on cores of their own) | between_runs (they use the '
                     "workers' cores only while no experiment trains) | off",
                     choices=('auto', 'reserved', 'between_runs', 'off'))
    cores: str | None = knob(None, 'the cores the run may use, e.g. "0-7"',
                             unset=(AUTO, 'all this process may use'), legacy='')
    reserve_cores: int | None = knob(None, 'reserved: cores for the policy server and learner', check='positive',
                                     unset=(AUTO, '1, or 2 from 16 cores'), legacy=0)


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
    abort_z: float = knob(2.0,
                          "the gap needed, in the incumbent's run-to-run spreads of training loss (2 and "
                          'min_frac 0.2: chosen by `arrl bench abort --grid` on three default runs; over nine, 34% '
                          'of the training saved and 1 of 24 accepted edits aborted, a longer warm-up; '
                          'docs/BENCHMARKS.md)',
                          check='non_negative')
    abort_margin: float = knob(0.0, 'extra training-loss gap needed', check='non_negative')
    abort_every: float = knob(0.1, 'check at each this fraction of the budget', check=('positive', 'unit'))
    abort_min_frac: float = knob(0.2, 'never before this fraction of the budget', check='unit')
    novelty_catalog: float = knob(0.0,
                                  'a catalog edit this near a program already run (knob steps / (values - 1), '
                                  'summed) is answered without training; 0: exact repeats only, the choice of '
                                  '`arrl bench novelty` (docs/BENCHMARKS.md)', check='non_negative')
    novelty_source: float = knob(0.0,
                                 'a free-form edit this near a program already run (1 - line similarity) is '
                                 'answered without training; 0: exact repeats only, the choice of `arrl bench '
                                 'novelty --distance source` on the default runs (docs/BENCHMARKS.md)',
                                 check='non_negative')
    strategy: str = knob('greedy',
                         'greedy: every proposal edits the incumbent | population: parents drawn from an archive '
                         'of islands and niches (arrl.driver.archive, docs/LOOP.md)',
                         choices=('greedy', 'population'))
    islands: int = knob(2, 'population: islands, each with its own elites (at most [workers] count)',
                        check='positive')
    exploit: float = knob(0.5, "population: share of parents that are their island's best elite; the others are "
                               "a niche's elite drawn at random", check='unit')
    inspirations: int = knob(2, "population: other elites of the parent's island shown in the prompt",
                             check='non_negative')
    migrate_every: int = knob(20, "population: each time this many more programs have trained, every island's "
                                  'best elite joins the next island (a ring); 0: never', check='non_negative')
    niches: list = knob(['size', 'speed'],
                        'population: the descriptors whose buckets make the niches: size (log2 model bytes), '
                        'speed (log2 tokens/s), knob:NAME (a catalog knob\'s position / 2)')
    confirm_elites: str = knob('niche',
                               'population: which runs earn a confirmation run: niche (one that beats its niche\'s '
                               'elite or opens a niche) | best (one that would be its island\'s best elite; a niche '
                               'without an elite offers its best single run as an exploring parent, never an elite; '
                               'fewer confirmations, no better search on the basins: docs/BENCHMARKS.md)',
                               choices=('niche', 'best'))


@dataclass
class RewardSection:
    """[reward] reward = (incumbent - val_bpb) / sigma, clipped; or a penalty"""

    clip_sigmas: float = knob(5.0, 'the improvement reward is clipped to +-this many noise sigmas', unit='sigma',
                              check='positive', alias='clip')
    edit_failed: float = knob(-1.0, 'penalty: the edit did not apply')
    near_duplicate: float = knob(-1.0, 'penalty: too near a program already run ([search] novelty_catalog, '
                                       'novelty_source); answered without training')
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
    minibatch_size: int | None = knob(None, 'samples per optimizer step', check='positive',
                                      unset=(AUTO, 'the whole batch'), legacy=0)
    lr: float = knob(0.0002, 'learning rate of the LoRA adapter', check='positive')
    value_lr: float = knob(0.001, 'value head (gae)', check='non_negative')
    ratio_clip: float = knob(0.2, "PPO's clip of the probability ratio", check='non_negative', alias='clip')
    kl_coef: float = knob(0.05, 'KL to the base model (adapter disabled)', check='non_negative')
    entropy_coef: float = knob(0.0, 'entropy bonus', check='non_negative')
    vf_coef: float = knob(0.5, 'value loss weight (gae)', check='non_negative')
    gamma: float = knob(0.95, 'gae', check='unit')
    lam: float = knob(0.95, 'gae', check='unit')
    grad_clip: float | None = knob(1.0, "the gradients' global norm is clipped to this", check='positive',
                                   unset=(OFF, 'no clipping'), legacy=0.0)
    max_staleness: int = knob(1,
                              'samples from adapters older than this many versions are dropped',
                              check='non_negative')
    learn_duplicates: bool = knob(True,
                                  'a duplicate (answered from the ledger) is a sample, paid the result it repeats')
    group_by: str = knob('state',
                         "group advantages: state (one request's proposals) | parent (all proposed from one "
                         "program: the incumbent, or a parent drawn from the archive) | incumbent (as parent)",
                         choices=('state', 'parent', 'incumbent'))
    whole_groups: bool = knob(True,
                              "a batch takes whole proposal groups: a result waits until its request's other "
                              'proposals have finished, so fast failures meet their slow siblings (false: the '
                              'oldest finished results, which splits groups)')
    advantage_scale: float | None = knob(None,
                                         'group advantages are (reward - group mean) / this, so tiny differences '
                                         'stay tiny', check='positive',
                                         unset=(AUTO, "divide by the group's std and normalise the batch"),
                                         legacy=0.0)
    sync: bool = knob(False,
                      'true: on-policy; no new proposals while a full batch waits for its update and the new '
                      "adapter's load (workers idle meanwhile; no sample goes stale)")
    rank: int = knob(16, 'LoRA rank (alpha below); the policy server allows up to max(16, rank)', check='positive')
    alpha: float = knob(32.0, 'LoRA alpha', check='positive')
    num_learners: int = knob(0, '0: one learner in the learner actor; >1: DDP over that many', check='non_negative')
    num_gpus: float | None = knob(None, 'per learner; fractions share a GPU', check='non_negative',
                                  unset=(AUTO, '1 when the workers have GPUs, else 0'), legacy=-1.0)
    threads: int | None = knob(None, 'torch threads of the learner', check='positive',
                               unset=(AUTO, "its cores where placed, else every core"), legacy=0)
    mmap_mb: int | None = knob(4,
                               'host memory: blocks above this many MB are mapped and given back when freed (glibc)',
                               unit='MB', check='positive',
                               unset=(OFF, "the allocator's default, which kept 3x the memory (LEARNER.md)"), legacy=0)
    seed: int = knob(0, "the learner's seed")
    warm_start: str | None = knob(None, 'start from another run\'s adapter: "RUN" (its last version), "RUN:VERSION", '
                                        'or a run folder\'s path; with the learner off it is served frozen '
                                        '(arrl.driver.lineage; `arrl launch --warm-start`)',
                                  unset=(OFF, 'a fresh adapter, the base model'), legacy='')

    def settings(self, gpus: float) -> dict:
        """The arrl.learner.learner.Learner settings, with num_gpus resolved."""
        d = dataclasses.asdict(self)
        d.pop("enabled")
        d.pop("learn_duplicates")  # which results are samples, and their groups, are the driver's side
        d.pop("group_by")  # (arrl.driver.learning, arrl.learner.trajectory)
        d.pop("whole_groups")
        d.pop("sync")  # when the driver asks for proposals (arrl.driver.learning, arrl.driver)
        d.pop("warm_start")  # where the first version comes from (arrl.driver.lineage)
        d["num_gpus"] = gpus
        return d


@dataclass
class IntegritySection:
    """[integrity] results too good to be true (arrl.driver.integrity, docs/SECURITY.md)"""

    floor_bpb: float | None = knob(None, 'val_bpb below this is never believed', unit='bpb', check='positive',
                                   unset=(AUTO, "the profile's bpb_floor"), legacy=0.0)
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

    max_experiments: int | None = knob(20, 'stop after this many experiments', check='positive',
                                       unset=(OFF, 'unbounded'), legacy=0)
    max_wall_s: float | None = knob(None, 'stop after this many wall seconds', unit='s', check='positive',
                                    unset=(OFF, 'no limit'), legacy=0.0)
    max_gpu_hours: float | None = knob(None, 'stop after this many GPU hours of experiments', unit='h',
                                       check='positive', unset=(OFF, 'no limit'), legacy=0.0)
    target_bpb: float | None = knob(None, 'stop once the incumbent is at or below it', unit='bpb', check='positive',
                                    unset=(OFF, 'no target'), legacy=0.0)
    plateau: int | None = knob(None, 'stop after this many experiments without an acceptance', check='positive',
                               unset=(OFF, 'no limit'), legacy=0)
    max_failed_edits: int | None = knob(200,
                                        'stop after this many edits in a row that trained nothing: failed, rejected, '
                                        'or (without count_duplicates) answered from the ledger',
                                        check='positive', unset=(OFF, 'no limit'), legacy=0)
    count_duplicates: bool = knob(False,
                                  'false: max_experiments counts runs that trained, and duplicates count toward '
                                  'max_failed_edits; true: duplicates use up max_experiments too')


@dataclass
class TrackSection:
    """[track] where results are also sent: MLflow, W&B, a webhook (arrl.track, docs/TRACKING.md)"""

    mlflow: str = knob('', 'MLflow tracking URI: file:PATH, sqlite:///PATH, http(s)://HOST:PORT ("" = off)')
    mlflow_experiment: str = knob('arrl', 'MLflow experiment holding one run per arrl run')
    wandb: str = knob('', 'W&B project ("" = off)')
    wandb_mode: str = knob('offline', 'offline (run files under runs/<name>/wandb; `wandb sync` uploads them) | '
                           'online (needs WANDB_API_KEY or a `wandb login`)', choices=('offline', 'online'))
    webhook: str = knob('', 'notifications: an http(s) URL taking a Slack-compatible JSON body ("" = off)')
    notify: list = knob(['accepted', 'stopped', 'attention'], 'what the webhook is told: accepted | stopped | '
                        'attention (a crash streak, a learner restart, a sigma warning)')
    crash_streak: int = knob(3, 'attention: this many candidates in a row that crashed (crash, oom, timeout, nan)',
                             check='positive')
    timeout_s: float = knob(5.0, 'the longest one write to a tracker or webhook may take', unit='s', check='positive')
    retry_s: float = knob(30.0, 'a tracker that failed is tried again after this long (doubling to 10 min)',
                          unit='s', check='positive')
    flush_s: float = knob(30.0, 'at the stop, how long the run waits for what is still unsent (the rest is sent '
                          'by the next `--resume` or `arrl track`)', unit='s', check='non_negative')


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
    track: TrackSection = field(default_factory=TrackSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
