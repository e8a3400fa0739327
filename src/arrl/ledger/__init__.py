"""The run store: everything a run records, on disk, so that it survives kill -9.

Owns: store.py (the SQLite WAL ledger, its transactions and artifacts) and export.py (Parquet
tables and results.tsv). Every SQL statement of arrl belongs here. Does not own: what the
records mean (the driver decides; the report reads). May import: arrl.paths; nothing above it.
"""
