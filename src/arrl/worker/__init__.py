"""Running experiments: one worker per GPU (or core set), each running one untrusted script at a
time in a sandbox and returning its Outcome.

Owns: worker.py (ExperimentWorker: the node's data, models kept for the test split), scratch.py
(its scratch folder, removed on close, swept after a dead owner), outcome.py (Outcome and its
timings), abort.py (the early-abort rule), settings.py (the sandbox settings of a worker), and
sandbox/ (containment and measurement). Does not own: which experiment runs (the driver) or what
its result means (the driver's acceptance).
May import: arrl.paths, arrl.config, arrl.target, arrl.ops; never the driver, policy or learner.
"""
