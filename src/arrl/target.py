"""A mutable target: `targets/<name>/` with train.py, target.toml and program.md.

target.toml fields (all validated; unknown fields are errors that name the file):
    profile       environment profile ("shakespeare", "web")          required
    budget_s      training budget in seconds (default: the profile's)
    grace_s       extra seconds before the hard kill (start-up, saving)   default 20
    memory_mb     memory limit of a run's process tree                  default 4096
    description   one line shown in listings and prompts
    sigma_max_bpb the largest run-to-run noise sigma that is plausible for this target; a larger
                  estimate is flagged in `arrl status` and the report (0: no check)   default 0
    [[editable]]  optional regions of train.py the policy may change:
                  begin = "marker line text", end = "marker line text"
    allow         names the static edit policy lets edits use (modules, calls), e.g. ["shutil"]
    [catalog.NAME] optional structured knob: a top-level assignment `NAME = value` in
                  train.py; values = ["python literal", ...] (strings, so 3e-4 stays 3e-4);
                  meaning = "one line" (optional; default: the assignment's trailing comment)
                  simulated targets only, never shown to a policy: optimum = "value" (where the
                  bowl's minimum lies), or basins = ["value", ...] on every knob (the centres of a
                  landscape with several basins, the best first: arrl.worker.sandbox.simulated)
    prompt_code   whether a catalog prompt carries the whole train.py (default false: the knobs with
                  their current values and meanings; free-form edit formats always carry it)

arrl never imports a target: train.py is only read as text and run in a sandbox.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

from env import profiles


class TargetError(Exception):
    """A target is missing or its files are invalid. The message names file and field."""


@dataclass(frozen=True)
class Knob:
    name: str
    values: tuple[str, ...]  # Python literals as source text
    current: str  # the value in train.py as shipped
    meaning: str = ""  # one line for the prompt: target.toml `meaning`, else the assignment's comment
    optimum: str | None = None  # simulated targets only: where the simulated sandbox's bowl has its minimum;
    # never shown to a policy (arrl.worker.sandbox.simulated, arrl.bench.family)
    basins: tuple[str, ...] = ()  # simulated targets only: the knob's value at the centre of each basin of a
    # landscape with local optima, the best basin first (arrl.worker.sandbox.simulated); never shown to a policy


@dataclass(frozen=True)
class Region:
    begin: str
    end: str
    first_line: int  # 1-based, the line after `begin`
    last_line: int  # 1-based, the line before `end`


@dataclass(frozen=True)
class Target:
    name: str
    dir: Path
    profile: str
    budget_s: float
    grace_s: float
    memory_mb: int
    description: str
    editable: tuple[Region, ...]
    catalog: tuple[Knob, ...]
    allow: frozenset[str] = frozenset()
    sigma_max_bpb: float = 0.0
    prompt_code: bool = False  # a catalog prompt carries the whole train.py

    @property
    def train_py(self) -> Path:
        return self.dir / "train.py"

    @property
    def program_md(self) -> Path:
        return self.dir / "program.md"

    def source(self) -> str:
        return self.train_py.read_text()


_FIELDS = {"profile": str, "budget_s": (int, float), "grace_s": (int, float), "memory_mb": int,
           "sigma_max_bpb": (int, float), "description": str, "editable": list, "catalog": dict, "allow": list,
           "prompt_code": bool}


def _assignments(tree: ast.Module, source: str) -> dict[str, str]:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.get_source_segment(source, node.value)
    return out


def _comments(tree: ast.Module, source: str) -> dict[str, str]:
    """The trailing `# comment` of each one-line top-level assignment."""
    lines = source.splitlines()
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and node.lineno == node.end_lineno:
            rest = lines[node.lineno - 1][node.end_col_offset:].strip()
            if rest.startswith("#"):
                out[node.targets[0].id] = rest.lstrip("#").strip()
    return out


def _regions(spec: list, lines: list[str], where: str) -> tuple[Region, ...]:
    regions = []
    for i, r in enumerate(spec):
        if not isinstance(r, dict) or set(r) != {"begin", "end"} or not all(isinstance(v, str) for v in r.values()):
            raise TargetError(f"{where}: editable[{i}] must have exactly the string fields begin and end")
        try:
            b = next(n for n, line in enumerate(lines) if line.strip() == r["begin"].strip())
            e = next(n for n, line in enumerate(lines) if n > b and line.strip() == r["end"].strip())
        except StopIteration:
            raise TargetError(f"{where}: editable[{i}] markers {r['begin']!r} ... {r['end']!r} not found in train.py")
        regions.append(Region(r["begin"], r["end"], b + 2, e))
    return tuple(regions)


def _catalog(spec: dict, assigned: dict[str, str], comments: dict[str, str], where: str) -> tuple[Knob, ...]:
    knobs = []
    for name, knob in spec.items():
        field = f"{where}: catalog.{name}"
        if not isinstance(knob, dict) or "values" not in knob or \
                not set(knob) <= {"values", "meaning", "optimum", "basins"}:
            raise TargetError(f"{field} must have the field values and may have meaning, optimum or basins, "
                              "nothing else")
        meaning = knob.get("meaning", comments.get(name, ""))
        if not isinstance(meaning, str) or "\n" in meaning:
            raise TargetError(f"{field}.meaning must be one line of text")
        values = knob["values"]
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise TargetError(f"{field}.values must be a non-empty list of strings (Python literals)")
        for v in values:
            try:
                ast.literal_eval(v)
            except (ValueError, SyntaxError):
                raise TargetError(f"{field}.values: {v!r} is not a Python literal") from None
        if name not in assigned:
            raise TargetError(f"{field}: train.py has no top-level assignment {name} = ...")
        current = assigned[name]
        if not any(ast.literal_eval(v) == _literal(current) for v in values):
            raise TargetError(f"{field}.values must include the current value {current}")
        optimum = knob.get("optimum")
        if optimum is not None and optimum not in values:
            raise TargetError(f"{field}.optimum must be one of its values, got {optimum!r}")
        basins = knob.get("basins", [])
        if not isinstance(basins, list) or len(basins) == 1 or any(b not in values for b in basins):
            raise TargetError(f"{field}.basins must list two or more of its values (one per basin), got {basins!r}")
        if basins and optimum is not None:
            raise TargetError(f"{field}: optimum and basins are two landscapes; give one")
        knobs.append(Knob(name, tuple(values), current, meaning.strip(), optimum, tuple(basins)))
    counts = {len(k.basins) for k in knobs}
    if len(counts) > 1:
        raise TargetError(f"{where}: catalog: every knob needs basins, and the same number of them "
                          f"(found {', '.join(f'{k.name}: {len(k.basins)}' for k in knobs)})")
    return tuple(knobs)


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return object()


def load(name_or_dir: str | Path, targets_dir: Path) -> Target:
    """Load a target by name (a folder of `targets_dir`) or by a path to its folder."""
    d = Path(name_or_dir)
    if not (d.is_dir() and (d / "target.toml").is_file()):
        d = Path(targets_dir) / str(name_or_dir)
    toml_path = d / "target.toml"
    if not toml_path.is_file():
        known = sorted(p.name for p in Path(targets_dir).iterdir() if (p / "target.toml").is_file()) \
            if Path(targets_dir).is_dir() else []
        raise TargetError(f"unknown target {str(name_or_dir)!r} (known: {', '.join(known) or 'none'})")
    where = str(toml_path)
    try:
        spec = tomllib.loads(toml_path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise TargetError(f"{where}: {e}") from None
    for key, value in spec.items():
        if key not in _FIELDS:
            raise TargetError(f"{where}: unknown field {key!r} (known: {', '.join(_FIELDS)})")
        if isinstance(value, bool) != (_FIELDS[key] is bool) or not isinstance(value, _FIELDS[key]):
            raise TargetError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    if "profile" not in spec:
        raise TargetError(f"{where}: missing required field 'profile'")
    try:
        prof = profiles.get(spec["profile"])
    except KeyError as e:
        raise TargetError(f"{where}: field 'profile': {e.args[0]}") from None
    train_py = d / "train.py"
    try:
        source = train_py.read_text()
        tree = ast.parse(source)
    except (OSError, UnicodeDecodeError, SyntaxError) as e:
        raise TargetError(f"{train_py}: {e}") from None
    allow = spec.get("allow", [])
    if not all(isinstance(a, str) and a for a in allow):
        raise TargetError(f"{where}: field 'allow' must be a list of non-empty strings")
    budget = float(spec.get("budget_s", prof.time_budget_s))
    grace = float(spec.get("grace_s", 20))
    memory = spec.get("memory_mb", 4096)
    sigma_max = float(spec.get("sigma_max_bpb", 0.0))
    if budget <= 0 or grace < 0 or memory <= 0 or sigma_max < 0:
        raise TargetError(f"{where}: budget_s and memory_mb must be positive, grace_s and sigma_max_bpb not negative")
    return Target(
        name=d.name,
        dir=d.resolve(),
        profile=prof.name,
        budget_s=budget,
        grace_s=grace,
        memory_mb=memory,
        description=spec.get("description", ""),
        editable=_regions(spec.get("editable", []), source.splitlines(), where),
        catalog=_catalog(spec.get("catalog", {}), _assignments(tree, source), _comments(tree, source), where),
        allow=frozenset(allow),
        sigma_max_bpb=sigma_max,
        prompt_code=spec.get("prompt_code", False),
    )


# ---- the catalog's values in a script, and the schema of an edit to them ----------------------
def catalog_schema(catalog: tuple[Knob, ...], current: dict[str, str] | None = None) -> dict:
    """JSON schema for a catalog edit: any non-empty subset of knobs, each set to an allowed value. With
    `current` (`catalog_values` of the incumbent) each knob's current value is left out, so every answer
    changes train.py: in a README run the unconstrained policy spent 16 of 30 proposals restating the
    incumbent's values (`empty_edit`). A knob with no other value is left out; if none is left, the plain
    schema is returned."""
    props = {k.name: {"type": "string", "enum": other_values(k, current or {})} for k in catalog}
    props = {name: p for name, p in props.items() if p["enum"]}
    if not props:
        return catalog_schema(catalog)
    return {"type": "object", "properties": props, "additionalProperties": False, "minProperties": 1}


def other_values(knob: Knob, current: dict[str, str]) -> list[str]:
    """The knob's values other than its current one in `current` (`catalog_values`): what an edit can set."""
    return [v for v in knob.values if v != current.get(knob.name)]


def catalog_values(source: str, catalog: tuple[Knob, ...]) -> dict[str, str]:
    """The current value (source text) of each catalog knob assigned at the top level of `source`."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    names = {k.name for k in catalog}
    return {n.targets[0].id: ast.get_source_segment(source, n.value) for n in tree.body
            if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
            and n.targets[0].id in names}
