"""Reading a run for people: `arrl status` (status.py) and its live view (live.py), the numbers of a run's
tables (tables.py), its figures (figures.py), `arrl report`'s summary (summary.py), runs compared on the
same axes (compare.py), and what a run's unset config fields became (resolved.py).

Owns: presentation only; it reads the ledger, its exports and the driver's live file and never writes a
record. May import: ledger, arrl.paths, arrl.config, arrl.target, driver (lineage, the live file's reader),
ops (core lists); nothing in the loop imports it.
"""
