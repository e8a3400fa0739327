"""How far a program is from the programs already run: the distance behind novelty before compute.

Exact repeats are caught by the normalised source hash (arrl.driver.candidates). A proposal that is
only *near* a program already run costs a full run and may teach little: with `[search]
novelty_catalog` or `novelty_source` above 0 the driver answers it without training (status
`near_duplicate`). Both are 0 by default, the threshold `arrl bench novelty` chose by replaying
recorded runs: on catalog edits every threshold that saved compute lost accepted edits.

Two distances, both 0 for the same program:

- catalog: when both sources set every catalog knob to one of its values and are the same apart
  from those assignments, the sum over knobs of |position a - position b| / (values - 1). One
  step of one knob with 7 values is 0.167; every knob from one end of its list to the other is
  the number of knobs.
- source: otherwise, 1 - the similarity ratio of the two normalised sources' lines (difflib), in
  [0, 1].
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass

from arrl.driver.identity import normalize
from arrl.target import Knob, catalog_values


@dataclass(frozen=True)
class Near:
    distance: float
    exp_id: int  # the nearest program's experiment
    kind: str  # "catalog" or "source"


def positions(source: str, catalog: tuple[Knob, ...]) -> tuple[int, ...] | None:
    """Each knob's position in its catalog list, or None when a knob is missing or set off the catalog."""
    if not catalog:
        return None
    assigned = catalog_values(source, catalog)
    out = []
    for k in catalog:
        text = assigned.get(k.name)
        if text is None:
            return None
        pos = _position(text, k)
        if pos is None:
            return None
        out.append(pos)
    return tuple(out)


def _position(text: str, k: Knob) -> int | None:
    if text in k.values:
        return k.values.index(text)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return next((i for i, v in enumerate(k.values) if ast.literal_eval(v) == value), None)


def _rest(source: str, catalog: tuple[Knob, ...]) -> str:
    """The source without its top-level knob assignments (normalised): what a catalog edit leaves alone."""
    names = {k.name for k in catalog}
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    tree.body = [n for n in tree.body if not (isinstance(n, ast.Assign) and len(n.targets) == 1
                                              and isinstance(n.targets[0], ast.Name) and n.targets[0].id in names)]
    return ast.unparse(tree)


class Index:
    """The programs run so far, for nearest-neighbour questions about a new one."""

    def __init__(self, catalog: tuple[Knob, ...] = ()):
        self.catalog = catalog
        self.programs: list[tuple[int, tuple[int, ...] | None, str, list[str]]] = []  # (id, positions, rest, lines)

    def add(self, exp_id: int, source: str) -> None:
        self.programs.append((exp_id, positions(source, self.catalog), _rest(source, self.catalog),
                              _lines(source)))

    def nearest(self, source: str) -> Near | None:
        """The nearest program run so far (None before any)."""
        pos, rest, lines = positions(source, self.catalog), _rest(source, self.catalog), None
        best: Near | None = None
        for exp_id, p, r, ls in self.programs:
            if pos is not None and p is not None and r == rest:
                d = sum(abs(a - b) / max(len(k.values) - 1, 1) for a, b, k in zip(pos, p, self.catalog))
                near = Near(d, exp_id, "catalog")
            else:
                lines = lines if lines is not None else _lines(source)
                near = Near(1.0 - difflib.SequenceMatcher(None, lines, ls, autojunk=False).ratio(), exp_id, "source")
            if best is None or near.distance < best.distance:
                best = near
        return best


def _lines(source: str) -> list[str]:
    return [ln.strip() for ln in normalize(source).splitlines() if ln.strip()]
