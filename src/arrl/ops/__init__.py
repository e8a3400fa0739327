"""The machine under the loop: which cores exist and who gets them, process start times, and the
metrics Ray's dashboard shows.

Owns: cores.py (core lists, cpuset confinement), placement.py (the run's core plan), procs.py
(a process's start in ticks since boot), metrics.py (Ray metrics of the driver and workers).
Does not own: what runs on those cores. May import: arrl.paths, arrl.config; nothing else of arrl.
"""
