"""The typed result of one experiment: status, metric, timings, log tail, learning curve.

Failures are data: every run ends in an Outcome with one of STATUSES, recorded like a
success. The statuses follow the design brief; this issue produces the sandbox ones
(ok, crash, oom, timeout, nan, invalid_metric); the others come from later stages.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

STATUSES = (
    "ok",  # trained, saved, evaluated
    "edit_failed",  # the proposed edit could not be applied
    "near_duplicate",  # answered without training: too near a program already run ([search] novelty_*)
    "rejected",  # the static edit policy refused the source
    "crash",  # non-zero exit, or killed for too many processes
    "oom",  # exceeded the memory limit
    "timeout",  # still running at budget + grace: killed from outside
    "nan",  # non-finite training loss or logits
    "aborted",  # stopped early by self-evaluation
    "invalid_metric",  # no model, unloadable model, failed causality probe
    "suspicious",  # implausible result awaiting confirmation
    "contended",  # got far less compute than comparable runs, again after every re-run (arrl.driver.contention)
)


@dataclass(frozen=True)
class Timings:
    setup_s: float | None = None  # sandbox start -> training clock start (launch_s + the script's imports)
    launch_s: float | None = None  # sandbox start -> interpreter running inside the sandbox
    train_s: float | None = None  # training clock start -> process exit (includes saving)
    eval_s: float | None = None  # evaluator: load, probe, score
    wall_s: float | None = None  # sandbox start -> outcome


@dataclass(frozen=True)
class Outcome:
    status: str
    val_bpb: float | None = None
    message: str = ""
    log_tail: str = ""
    timings: Timings = field(default_factory=Timings)
    isolation: str = ""  # how the run was contained, e.g. "bwrap" or "none"
    env_hash: str = ""
    exit_code: int | None = None
    peak_rss_mb: float | None = None
    steps: int | None = None
    tokens: int | None = None  # tokens the environment's loader served for training (its progress records)
    cpu_s: float | None = None  # CPU time the training process tree got (measured from outside)
    cpu_share: float | None = None  # cpu_s / (the training process's wall time x its cores); 1.0 = all busy
    foreign_share: float | None = None  # share of its cores' time that other processes took while it trained
    cores: str = ""  # the cores the run was confined to, e.g. "1" or "0-3" ("" = not pinned)
    model_bytes: int | None = None  # size of the saved model file (an `ok` run; the archive's `size` descriptor)
    curve: tuple[tuple[float, int, float], ...] = ()  # (elapsed_s, step, train_loss)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"unknown outcome status {self.status!r}")

    @property
    def tokens_per_s(self) -> float | None:
        """Training throughput: tokens over the training clock's seconds."""
        t = self.timings.train_s
        return self.tokens / t if self.tokens is not None and t else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Outcome":
        """The Outcome a `to_dict()` (or outcome.json) was made from; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["timings"] = Timings(**{k: v for k, v in (d.get("timings") or {}).items()
                                   if k in {f.name for f in fields(Timings)}})
        kw["curve"] = tuple(tuple(p) for p in (d.get("curve") or ()))
        return cls(**kw)

    def summary(self) -> str:
        """`key: value` lines, one per fact: easy to read and to grep."""
        t = self.timings
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        lines = [
            f"status: {self.status}",
            f"val_bpb: {'-' if self.val_bpb is None else f'{self.val_bpb:.6f}'}",
            f"setup_s: {fmt(t.setup_s)}",
            f"launch_s: {fmt(t.launch_s)}",
            f"train_s: {fmt(t.train_s)}",
            f"eval_s: {fmt(t.eval_s)}",
            f"wall_s: {fmt(t.wall_s)}",
            f"steps: {'-' if self.steps is None else self.steps}",
            f"tokens: {'-' if self.tokens is None else self.tokens}",
            f"tokens_per_s: {fmt(self.tokens_per_s)}",
            f"cpu_s: {fmt(self.cpu_s)}",
            f"cpu_share: {fmt(self.cpu_share)}",
            f"foreign_share: {fmt(self.foreign_share)}",
            f"cores: {self.cores or '-'}",
            f"peak_rss_mb: {fmt(self.peak_rss_mb)}",
            f"isolation: {self.isolation}",
            f"env_hash: {self.env_hash[:16]}",
        ]
        if self.message:
            lines.append(f"message: {self.message}")
        return "\n".join(lines)


@dataclass(frozen=True)
class SealedScore:
    """A run's model scored on the sealed test split (status `missing` when no worker holds it)."""
    status: str
    test_bpb: float | None = None
    message: str = ""


def core_count(cores: str) -> int:
    """How many cores a list such as "0-2,5" names (0 for "")."""
    n = 0
    for part in filter(None, cores.split(",")):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n
