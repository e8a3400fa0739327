"""Ignoring SIGTERM: ignore every catchable termination signal and spin. Only SIGKILL from outside, at budget +
grace, can end it: timeout, within the grace."""

import signal

for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGXCPU):
    signal.signal(sig, signal.SIG_IGN)
n = 0
while True:
    n += 1
