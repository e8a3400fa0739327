"""Reading a W&B run's own files: the transaction log `run-<id>.wandb` that W&B writes in every mode (offline
too), one per process that ran it (a resumed run adds a folder). The outbox asks it which items a run holds;
the tests read a run back with it.

The format (W&B's, as its files show it): a 7-byte header (":W&B", 0xBEE1 little-endian, version 0), then
LevelDB-log records in 32 KiB blocks, each record `crc32 (uint32 LE) | length (uint16 LE) | type (1 full,
2 first, 3 middle, 4 last) | data`, the CRC taken over the type byte and the data; a block's tail shorter than
a record header is padding. Each record's data is a `wandb_internal_pb2.Record`. A record cut short by a kill
ends the reading: what came before it is whole.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

BLOCK = 32768
HEADER = 7
MAGIC = b":W&B"


def run_files(root: Path, run_id: str) -> list[Path]:
    """The transaction logs of run `run_id` under `root` (the folder given to wandb.init), oldest first."""
    return sorted((Path(root) / "wandb").glob(f"*run-*-{run_id}/run-{run_id}.wandb"))


def records(path: Path):
    """The raw records of one transaction log, in order, up to the first damaged one."""
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        return
    pos, parts = HEADER, b""
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:
            pos += room
            continue
        crc, n, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk = data[pos + HEADER:pos + HEADER + n]
        if len(chunk) < n or crc != zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF:
            return
        pos += HEADER + n
        if kind == 1:
            yield chunk
        elif kind == 2:
            parts = chunk
        elif kind == 3:
            parts += chunk
        elif kind == 4:
            yield parts + chunk


def history(root: Path, run_id: str) -> list[dict]:
    """Every row the run logged, over all its processes, as {key: value}."""
    from wandb.proto import wandb_internal_pb2 as pb

    rows = []
    for f in run_files(root, run_id):
        for raw in records(f):
            r = pb.Record()
            r.ParseFromString(raw)
            if r.WhichOneof("record_type") == "history":
                rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
    return rows


def config(root: Path, run_id: str) -> dict:
    """The run's config as its last process recorded it ({key: value})."""
    from wandb.proto import wandb_internal_pb2 as pb

    out: dict = {}
    for f in run_files(root, run_id):
        for raw in records(f):
            r = pb.Record()
            r.ParseFromString(raw)
            kind = r.WhichOneof("record_type")
            if kind == "config":
                for i in r.config.update:
                    out[i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
            elif kind == "run":
                for i in r.run.config.update:
                    out[i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
    return out
