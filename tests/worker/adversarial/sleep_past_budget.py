"""Sleeping past the budget: start the training clock, report one step, then sleep for an hour instead of
stopping at the budget. The sandbox must kill it at budget + grace: timeout."""

import time

from env import progress

run = progress.start()
run.report(1, 5.0)
time.sleep(3600)
