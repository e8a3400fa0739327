"""Fork bomb: every process forks, generation after generation (bounded at 2**11 processes so that a broken
sandbox cannot take the test machine down with it), and they all sleep. The watchdog's process count (or the
container's pids limit) must stop it: crash (or oom when the copies' memory trips first), nothing left."""

import os
import time

for generation in range(11):
    try:
        os.fork()
    except OSError:
        pass
    time.sleep(0.02)
time.sleep(60)
