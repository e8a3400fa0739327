"""The driver's side of learning: results -> trajectory batches -> learner -> adapter -> policy server.

`Learning.step()` is called from the driver's loop and never blocks:

  * when no update is in flight and `batch_size` learnable results wait in the ledger (a
    candidate whose proposal carries token ids and logprobs, with its reward), they become an
    Arrow record batch, written to runs/<name>/trajectories/ as Parquet and put in the
    object store; the learner actor's `update` gets the reference;
  * when an update returns, one transaction records the new policy version (metrics, counts,
    timings) and which samples it used or dropped (`samples`); the adapter files go from the
    learner to the policy server through the object store (`load_adapter`);
  * when the load returns, the version's record gets the sync latency (update done -> served), and
    `served` moves on: the driver drops proposals still queued from an older adapter (event
    `stale_proposal`), so the next candidates come from the new one.

With `sync` (config `[learner] sync`), learning is on-policy: while an update or the load of
its adapter is in flight, `holding()` tells the driver to ask the policy for no new
proposals, so the next ones come from the new adapter and no sample goes stale. Workers
run what is already queued and then wait: the loop trades wall time for experiments. After
a learner error the hold is lifted until an update succeeds again (a failing learner never
stops the search).

Nothing is marked consumed before its update is recorded, so a driver killed mid-update
sends the same samples again after `--resume`; the learner restores the checkpoint of the
last recorded version (`resume`). A learner actor that dies mid-run is replaced the same
way, from the checkpoint of the ledger's version, and the lost update's samples are sent
again (up to MAX_RESTARTS per session; then the policy stays frozen at its version).
"""

from __future__ import annotations

import time

import ray

from arrl.learner import trajectory
from arrl.learner.learner import LearnerError
from arrl.ledger.store import Store

MAX_RESTARTS = 10  # learner actors replaced in one driver session before the policy is left frozen


class Learning:
    def __init__(self, store: Store, learner, policy, batch_size: int, max_staleness: int = 1, log=print,
                 make_learner=None, duplicates: bool = True, group_by: str = "state", sync: bool = False,
                 whole_groups: bool = True):
        self.store, self.learner, self.policy = store, learner, policy  # actor handles
        self.make_learner = make_learner  # () -> a new learner actor, to replace a dead one
        self.restarts = 0
        self.batch_size, self.max_staleness = batch_size, max_staleness
        # duplicates=False: a candidate answered from the ledger carries no new result, so it is not a sample
        self.duplicates = duplicates
        self.group_by = group_by  # which samples share a group baseline (arrl.learner.trajectory.from_ledger)
        self.whole_groups = whole_groups  # a batch takes whole proposal groups (ready_samples)
        self.sync = sync  # on-policy: no new proposals while an update or its adapter load is in flight
        self.failing = False  # the last update raised; the sync hold is lifted until one succeeds
        self.log = log
        self.update_ref = None  # (ref, exp ids, t_sent)
        self.load_ref = None  # (ref, version, t_update_done)
        self.version = store.policy_version()
        self.served = self.version  # the adapter the policy server answers with (resume() loads the ledger's)
        self._checked = None  # (finished experiments, version, queued groups) at the last look for samples
        self.dead: str | None = None  # why the learner actor is gone; the search goes on with a frozen policy

    # -- start / resume ---------------------------------------------------------------------------
    def resume(self) -> None:
        """Bring the learner and the policy server to the ledger's last version."""
        if not self.version:
            return
        try:
            files_ref = ray.get(self.learner.restore.remote(self.version))
        except ray.exceptions.RayTaskError as e:
            raise _learner_error(e, f"the learner could not restore version {self.version}") from None
        t0 = time.time()
        swap_s = ray.get(self.policy.load_adapter.remote(self.version, files_ref))
        record = next((v for v in self.store.policy_versions() if v["version"] == self.version), {})
        if not record.get("loaded_at"):  # the driver died between the update and its load: served only now
            with self.store.tx():
                self.store.update_policy_version(self.version, loaded_at=time.time(), swap_s=swap_s,
                                                 sync_s=time.time() - t0, loaded_on_resume=True)
        self.log(f"learner: resumed at adapter version {self.version}")

    def warm_start(self, source) -> None:
        """A new run's version 1 from another run's checkpoint (arrl.driver.lineage.Source), served before the
        first proposal; the ledger records the source (meta `lineage`, and the version's info)."""
        if self.version:
            return  # a resumed run: its versions, the first one included, are its own checkpoints
        try:
            files_ref, sha = ray.get(self.learner.warm_start.remote(source.ckpt))
        except ray.exceptions.RayTaskError as e:
            raise _learner_error(e, f"the learner could not start from {source.describe()}") from None
        t0 = time.time()
        swap_s = ray.get(self.policy.load_adapter.remote(1, files_ref))
        link = source.link()
        with self.store.tx():
            self.store.add_policy_version(1, warm_start=link, adapter_sha256=sha, loaded_at=time.time(),
                                          swap_s=swap_s, sync_s=time.time() - t0)
            self.store.put("lineage", link)
        self.version = self.served = 1
        self.log(f"learner: warm-started from {source.describe()}; served as v1")

    # -- the loop's hook ---------------------------------------------------------------------------
    def refs(self) -> list:
        """Object refs the driver may wait on (so it wakes up when an update or a load is done)."""
        return [x[0] for x in (self.update_ref, self.load_ref) if x is not None]

    def holding(self) -> bool:
        """Whether the driver should wait before asking the policy for proposals (sync mode only)."""
        if not self.sync or self.dead or self.failing:
            return False
        return self.update_ref is not None or self.load_ref is not None

    def ready_samples(self, limit: int, queued: frozenset = frozenset()) -> list[int]:
        """The next batch's samples, oldest first; results already too stale are recorded as dropped first.

        With `whole_groups`, a batch is made of whole proposal groups (one request's proposals): a group
        waits while one of its candidates is pending, running, or still in the driver's queue (`queued`, the
        groups of its queued proposals), and whole groups are taken until `limit` or more samples. Without,
        the oldest `limit` finished results are taken (arrival order), which splits a group whose fast
        failures finish first from its slow runs: each part is compared only with itself.
        """
        floor = self.version - self.max_staleness
        stale = self.store.stale_learnable(floor, self.duplicates)
        if stale:
            with self.store.tx():
                self.store.record_samples([(eid, self.version + 1, 0, self.version - v) for eid, v in stale])
        if not self.whole_groups:
            return self._unconsumed(limit)
        waiting = self.store.open_groups() | set(queued)
        rows = [(eid, key or f"exp:{eid}") for eid, key in self.store.unconsumed_learnable_groups(self.duplicates)]
        rows = [(eid, key) for eid, key in rows if key not in waiting]
        return [rows[i][0] for i in trajectory.whole_groups([k for _, k in rows], limit)]

    def waiting(self) -> int:
        """Learnable results no update has consumed or dropped yet (read only)."""
        return len(self._unconsumed(-1))

    def _unconsumed(self, limit: int) -> list[int]:
        """Ids of learnable results not in `samples`, oldest first (limit -1: all)."""
        return self.store.unconsumed_learnable(limit, self.duplicates)

    def busy(self) -> bool:
        """Whether an update or an adapter load is in flight (placement between_runs: no experiment
        starts meanwhile, arrl.ops.placement)."""
        return self.update_ref is not None or self.load_ref is not None

    def step(self, start: bool = True, queued: frozenset = frozenset()) -> None:
        """Record finished updates and loads; with `start`, send the next batch when one is ready (the
        driver passes False while an experiment trains on the learner's cores). `queued`: the groups of the
        proposals the driver holds that are not experiments yet (`ready_samples`)."""
        if self.dead:
            return
        if self.update_ref is not None and _done(self.update_ref[0]):
            self._finish_update()
        if self.load_ref is not None and _done(self.load_ref[0]):
            self._finish_load()
        if start and self.update_ref is None and self.load_ref is None:
            look = (self.store.done_count(), self.version, queued)
            if look == self._checked:
                return  # nothing new since the last look: spare the driver the join
            self._checked = look
            ids = self.ready_samples(self.batch_size, queued)
            if len(ids) >= self.batch_size:
                self._send(ids)

    def drain(self, timeout_s: float = 600.0) -> None:
        """At stop: let the update and the adapter load in flight finish and be recorded."""
        deadline = time.monotonic() + timeout_s
        while (self.update_ref or self.load_ref) and time.monotonic() < deadline:
            ray.wait(self.refs(), num_returns=1, timeout=max(0.1, deadline - time.monotonic()))
            if self.update_ref is not None and _done(self.update_ref[0]):
                self._finish_update()
            if self.load_ref is not None and _done(self.load_ref[0]):
                self._finish_load()

    # -- internals ---------------------------------------------------------------------------------
    def _send(self, ids: list[int]) -> None:
        batch = trajectory.from_ledger(self.store, ids, self.group_by)
        trajectory.write_parquet(batch, self.store.root / "trajectories", f"update-{self.version + 1:06d}")
        ref = ray.put(batch)
        # task names are the dashboard's live view of the learner and the policy server
        task = self.learner.update.options(name=f"update to v{self.version + 1} ({len(ids)} samples)")
        self.update_ref = (task.remote(ref), ids, time.time())

    def _finish_update(self) -> None:
        ref, ids, t_sent = self.update_ref
        self.update_ref = None
        try:
            res = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError) as e:
            # killed, or killed by Ray's memory monitor (the node ran low): the same as a death
            with self.store.tx():
                self.store.event("learner_died", error=str(e)[:1000], samples=len(ids))
            self._replace_learner(" ".join(str(e).split())[:200])
            return
        except ray.exceptions.RayTaskError as e:
            with self.store.tx():
                self.store.event("learner_error", error=str(e)[:1000], samples=len(ids))
            self.log(f"learner error (its samples stay unconsumed and are sent again): {str(e)[:300]}")
            self.failing = True
            time.sleep(1.0)
            return
        self.failing = False
        used = dict(zip(res.exp_ids, res.staleness))
        version = res.version if res.updated else self.version + 1  # a record even when nothing was usable
        info = res.info()
        info["staleness_max"] = max(used.values(), default=None)
        info["sent_s"] = time.time() - t_sent
        with self.store.tx():
            self.store.record_samples([(eid, version, int(eid in used), used.get(eid)) for eid in ids])
            if res.updated:
                files = res.files_ref
                self.store.add_policy_version(version, **info, adapter_sha256=res.adapter_sha256)
            else:
                self.store.event("update_skipped", samples=len(ids), **{k: info[k] for k in
                                                                          ("dropped_stale", "dropped_invalid")})
        if not res.updated:
            self.log(f"learner: all {len(ids)} samples were stale or invalid; nothing to train on")
            return
        self.version = version
        m = res.metrics
        self.log(f"learner: v{version} from {len(used)} samples ({res.dropped_stale} stale dropped), "
                 f"reward {res.reward_mean:+.2f}, loss {m.get('total_loss', float('nan')):+.4f}, "
                 f"kl {m.get('kl', float('nan')):.4f}, clip {m.get('clip_fraction', float('nan')):.2f}, "
                 f"{res.update_s:.1f}s")
        task = self.policy.load_adapter.options(name=f"load adapter v{version}")
        self.load_ref = (task.remote(version, files), version, time.time())

    def _replace_learner(self, why: str) -> None:
        """A new learner actor from the checkpoint of the ledger's version; the samples of the lost update
        were never recorded as consumed, so they are sent again. After MAX_RESTARTS, or when the checkpoint
        cannot be restored, the search goes on with the current adapter, frozen."""
        if self.make_learner is not None and self.restarts < MAX_RESTARTS:
            self.restarts += 1
            self.log(f"learner died ({why}); restarting it from adapter v{self.version} "
                     f"(restart {self.restarts} of {MAX_RESTARTS})")
            try:
                self.learner = self.make_learner()
                if self.version:
                    ray.get(self.learner.restore.remote(self.version))
                with self.store.tx():
                    self.store.event("learner_restarted", version=self.version, restarts=self.restarts)
                return
            except (ray.exceptions.RayError, LearnerError) as e:
                why = f"restart failed: {str(e)[:300]}"
        self.dead = why
        with self.store.tx():
            self.store.event("learner_frozen", reason=why)
        self.log(f"learner died ({why}); the search goes on with adapter v{self.version}, frozen. "
                 f"`arrl launch --resume` restarts it from its last checkpoint")

    def _finish_load(self) -> None:
        ref, version, t_done = self.load_ref
        self.load_ref = None
        try:
            swap_s = ray.get(ref)
        except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError) as e:
            with self.store.tx():
                self.store.event("adapter_load_error", version=version, error=str(e)[:1000])
            self.log(f"policy server could not load adapter v{version}: {str(e)[:300]}")
            return
        with self.store.tx():
            self.store.update_policy_version(version, loaded_at=time.time(), swap_s=swap_s,
                                             sync_s=time.time() - t_done)
        self.served = version


def _learner_error(e: Exception, what: str) -> LearnerError:
    """The learner's own LearnerError out of a failed Ray task, else `what` with the task's error."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, LearnerError) else LearnerError(f"{what}: {str(e)[:300]}")


def _done(ref) -> bool:
    ready, _ = ray.wait([ref], timeout=0)
    return bool(ready)
