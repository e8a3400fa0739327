"""A run's output: drained from its pipe into a file with a size cap, its tail kept in memory."""

from __future__ import annotations

import collections
import threading
from pathlib import Path


class CappedLog:
    """Drain a pipe into a capped file, keeping the last `tail_bytes` in memory."""

    def __init__(self, pipe, path: Path, cap: int, tail_bytes: int = 64 << 10):
        self.path, self.cap, self.written, self.dropped = path, cap, 0, 0
        self._tail = collections.deque()
        self._tail_size, self._tail_bytes = 0, tail_bytes
        self._thread = threading.Thread(target=self._drain, args=(pipe,), daemon=True)
        self._thread.start()

    def _drain(self, pipe) -> None:
        with open(self.path, "wb") as f:
            while block := pipe.read1(1 << 16) if hasattr(pipe, "read1") else pipe.read(1 << 16):
                room = self.cap - self.written
                if room > 0:
                    f.write(block[:room])
                    self.written += min(room, len(block))
                self.dropped += max(0, len(block) - max(room, 0))
                self._tail.append(block)
                self._tail_size += len(block)
                while self._tail_size - len(self._tail[0]) >= self._tail_bytes:
                    self._tail_size -= len(self._tail.popleft())
            if self.dropped:
                f.write(f"\n[arrl: log capped at {self.cap} bytes; {self.dropped} bytes dropped]\n".encode())

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    def tail(self, chars: int = 4000) -> str:
        return b"".join(self._tail).decode("utf-8", "replace")[-chars:]
