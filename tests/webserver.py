"""A small HTTP server for tests: static files with Range support and injected faults."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import random
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

WORDS = ("the of and to in is that it for on with as was by at be this from or an are which not have but they his "
         "her she he we you all one can will model data learning train loss river mountain quiet bright stone "
         "garden music window paper letter number simple good great small large early late north south").split()


def _doc(rng: random.Random, sentences: int) -> str:
    out = []
    for _ in range(sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 14))]
        out.append(" ".join(words).capitalize() + rng.choice([".", ".", "!", "?"]))
    return " ".join(out)


def write_shards(folder: Path, n_train: int, val_index: int, docs: int = 40, seed: int = 0) -> dict[str, str]:
    """Write shard_00000..n_train-1 and shard_<val_index> plus SHA256SUMS; return name -> sha256."""
    rng = random.Random(seed)
    sums = {}
    for i in [*range(n_train), val_index]:
        name = f"shard_{i:05d}.parquet"
        n = docs if i != val_index else docs // 2
        pq.write_table(pa.table({"text": [_doc(rng, 40) for _ in range(n)]}), folder / name)
        sums[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for n, h in sums.items()))
    return sums


class Handler(http.server.BaseHTTPRequestHandler):
    root: Path
    log: list  # (path, range header) per request
    faults: dict  # path -> list of actions for the next requests: "503", "cut", "garbage"

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.lstrip("/")
        self.log.append((name, self.headers.get("Range")))
        action = self.faults.get(name, []).pop(0) if self.faults.get(name) else None
        path = self.root / name
        if action == "503":
            self.send_error(503)
            return
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        if action == "garbage":
            data = bytes(len(data))
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if action == "cut":  # send half, then drop the connection
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@contextlib.contextmanager
def serve(root: Path, faults: dict | None = None, log: list | None = None):
    handler = type("H", (Handler,), {"root": Path(root), "faults": faults if faults is not None else {},
                                     "log": log if log is not None else []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
