"""The sealed test split: every incumbent's runs are scored on it by the worker that holds their
models, in a separate evaluation, and recorded (`test_scores`). Nothing that decides a reward, an
acceptance or an abort reads those scores back; this module only queues, submits and records.
Part of the Driver (arrl.driver.loop)."""

from __future__ import annotations

import ray

from arrl.worker.outcome import SealedScore


class SealedTestSplit:
    """Mixed into Driver: its methods use the Driver's state (self.store, self.cfg, self.incumbent, ...)."""

    def _queue_tests(self, inc_id: int, run_ids: list) -> None:
        """Score these runs of incumbent `inc_id` on the test split (each once, by the worker holding its model)."""
        done = self.store.test_scored()
        for i in run_ids:
            if i not in done and i not in {e for e, _, _ in self.test_inflight.values()}:
                self.tests.setdefault(i, inc_id)

    def _submit_test(self, w: int) -> bool:
        """Give idle worker `w` a test-split evaluation of a model it holds; True if it got one."""
        for exp_id, inc_id in list(self.tests.items()):
            ran_on = self.store.experiment(exp_id)["worker"] or ""
            idx = int(ran_on.split("-")[-1]) if ran_on.startswith("worker-") else -1
            if not 0 <= idx < len(self.workers):
                self.tests.pop(exp_id)
                with self.store.tx():
                    self.store.add_test_score(exp_id, inc_id, "missing", None, f"no worker holds its model ({ran_on})")
                continue
            if idx != w:
                continue
            self.tests.pop(exp_id)
            ref = self.workers[w].score_test.options(name=f"test split: exp {exp_id}").remote(exp_id)
            self.test_inflight[ref] = (exp_id, inc_id, w)
            self.busy.add(w)
            return True
        return False

    def _handle_test(self, ref) -> None:
        exp_id, inc_id, w = self.test_inflight.pop(ref)
        self.busy.discard(w)
        try:
            r = ray.get(ref)
        except ray.exceptions.RayError as e:
            r = SealedScore("missing", None, f"worker-{w}: {str(e)[:300]}")
        with self.store.tx():
            self.store.add_test_score(exp_id, inc_id, r.status, r.test_bpb, r.message)
        val = self.store.experiment(exp_id)["val_bpb"]
        score = "-" if r.test_bpb is None else f"{r.test_bpb:.4f}"
        self.log(f"exp {exp_id:>4} test split   {r.status:<14} test_bpb {score} (val_bpb "
                 f"{'-' if val is None else format(val, '.4f')}; incumbent exp {inc_id})")
