"""Reading a run for people: `arrl status` (status.py), the numbers of a run's tables
(tables.py), its figures (figures.py) and `arrl report`'s summary (summary.py).

Owns: presentation only; it reads the ledger and its exports and never writes a record.
May import: ledger, arrl.paths, arrl.config; nothing in the loop imports it.
"""
