"""The research loop: propose, apply, run, score, record, accept, learn, sync.

Owns: loop.py (the Driver and its run, top to bottom), the acceptance statistics (noise.py,
integrity.py, reward.py, contention.py), the stop rules (oracle.py), the run's git branch
(branch.py), turning a completion into a script (edits.py, guard.py), and the driver's side of
learning (learning.py: which results become samples, when the learner updates, which adapter is
served). Does not own: training (the worker), the policy's model, the learner's maths.
May import: ledger, ops, worker, policy, learner, arrl.config, arrl.target, arrl.paths; never
report, bench, cli, launch, actors or jobs.
"""
