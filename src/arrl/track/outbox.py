"""The outbox: every item the ledger makes final (arrl.track.items, .notices) goes to every sink (MLflow, W&B,
the webhook), from a thread of its own, so a tracker that is slow, down or refusing never stops or slows the
loop; the loop never waits on it.

Nothing is lost and nothing is sent twice:
  - the ledger is the record; `deliveries` holds, per sink, the keys the sink took;
  - an item is sent when its key is not there, and recorded there once the sink took it;
  - when a sink opens (a launch, a `--resume`, `arrl track`, or after a failure) it says which items it
    holds whole (MLflow: its run's params and metric histories; W&B: its run files). Keys it lost (W&B
    writes asynchronously, and a killed run's last rows may never reach its file) are sent again; keys it
    holds that the ledger did not record (killed between the write and the record) are recorded, not sent;
  - a sink that cannot tell (the webhook) is trusted from the ledger: at most the one notice in flight when
    the driver was killed is sent again (its body carries the key, to drop it by).
A sink that fails is tried again after `[track] retry_s`, doubling up to 10 minutes, with one warning when it
starts failing and one line when it is back. At the stop the run waits at most `[track] flush_s` for what is
unsent; the rest waits in the ledger for the next `--resume` or `arrl track RUN`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from arrl.ledger.store import Store
from arrl.track import items as items_mod
from arrl.track import notices

POLL_S = 2.0
MAX_RETRY_S = 600.0
MARK_EVERY = 25  # sent items recorded in one transaction


@dataclass
class _State:
    sink: object
    opened: bool = False
    done: set = field(default_factory=set)
    next_try: float = 0.0
    backoff: float = 0.0
    failing: str | None = None


class Outbox:
    def __init__(self, root: Path, cfg_dict: dict, sinks: list, track, log=print):
        self.root, self.cfg_dict, self.track, self.log = Path(root), cfg_dict, track, log
        self.states = [_State(s, backoff=track.retry_s) for s in sinks]
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.left = 0  # items unsent after the last pass

    def start(self) -> "Outbox":
        self.thread = threading.Thread(target=self._loop, name="arrl-track", daemon=True)
        self.thread.start()
        return self

    def close(self, finished: bool = True) -> int:
        """Stop the thread after a last pass of at most `flush_s`; close the sinks. Returns the items unsent."""
        if self.thread is not None:
            self.stop.set()
            self.thread.join(self.track.flush_s + 3 * self.track.timeout_s + 5)
        for st in self.states:
            if st.opened:
                try:
                    st.sink.close(finished)
                except Exception as e:  # noqa: BLE001 - a tracker's failure is never the run's
                    self.log(f"warning: tracker {st.sink.name}: closing failed ({_line(e)})")
        return self.left

    def _loop(self) -> None:
        store = Store(self.root)
        warned = False
        try:
            while not self.stop.wait(POLL_S):
                try:
                    self._pass(store)
                    warned = False
                except Exception as e:  # noqa: BLE001 - reading the ledger failed (locked, disk): try next time
                    if not warned:
                        self.log(f"warning: track: reading the ledger failed ({_line(e)}); trying again")
                    warned = True
            self._pass(store, deadline=time.monotonic() + self.track.flush_s, final=True)
        finally:
            store.close()

    def sync(self, deadline: float | None = None) -> int:
        """One pass in this thread (`arrl track`); returns the items still unsent."""
        store = Store(self.root)
        try:
            self._pass(store, deadline, final=True)
        finally:
            store.close()
        return self.left

    def _pass(self, store: Store, deadline: float | None = None, final: bool = False) -> None:
        t = self.track
        held = set.intersection(*(st.done for st in self.states)) if self.states and all(
            st.opened for st in self.states) else set()
        everything = items_mod.derive(store, self.cfg_dict, held)
        if any("notice" in st.sink.kinds for st in self.states):
            everything += notices.derive(store, self.cfg_dict.get("name", ""), t.notify, t.crash_streak)
        left = 0
        for st in self.states:
            mine = [it for it in everything if it.kind in st.sink.kinds]
            if time.monotonic() < st.next_try and not final:
                left += sum(it.key not in st.done for it in mine)
                continue
            left += self._send(store, st, mine, deadline)
        self.left = left

    def _send(self, store: Store, st: _State, mine: list, deadline: float | None) -> int:
        name, marks = st.sink.name, []
        try:
            if not st.opened:
                self._open(store, st, mine)
            for it in mine:
                if it.key in st.done:
                    continue
                if deadline is not None and time.monotonic() > deadline:
                    break
                st.sink.send(it)
                st.done.add(it.key)
                marks.append(it.key)
                if len(marks) >= MARK_EVERY:
                    _mark(store, name, marks)
            _mark(store, name, marks)
            if st.failing:
                self.log(f"tracker {name}: reachable again; what it missed was sent from the ledger")
            st.failing, st.backoff = None, self.track.retry_s
        except Exception as e:  # noqa: BLE001 - whatever a tracker raises, the loop goes on
            _mark(store, name, marks)
            if st.failing is None:
                self.log(f"warning: tracker {name} failed ({_line(e)}); the run goes on, and what it missed is "
                         f"sent again from the ledger (next try in {st.backoff:.0f} s)")
            st.failing, st.opened = _line(e), False
            st.next_try = time.monotonic() + st.backoff
            st.backoff = min(2 * st.backoff, MAX_RETRY_S)
        return sum(it.key not in st.done for it in mine)

    def _open(self, store: Store, st: _State, mine: list) -> None:
        """Open the sink and square the ledger's record with what it holds (see the module's doc)."""
        name = st.sink.name
        held = st.sink.open(mine)
        marked = store.deliveries(name)
        if held is not None:
            lost = {k for k in marked if k not in held and not k.startswith("config")}
            found = {it.key for it in mine if it.key in held} - marked
            with store.tx():
                store.undelivered(name, lost)
                store.delivered(name, found)
            if lost:
                self.log(f"tracker {name}: {len(lost)} item(s) it lost are sent again from the ledger")
            marked = (marked - lost) | found
        st.done = {k for k in marked if not k.startswith("config")}  # the config is sent at every open
        st.opened = True


def _mark(store: Store, sink: str, keys: list) -> None:
    if keys:
        with store.tx():
            store.delivered(sink, keys)
        keys.clear()


def _line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]
