"""Applying a policy's completion to train.py: new source that compiles, or a typed failure.

Three formats:
- `search_replace` (default for capable models): one or more blocks
      <<<<<<< SEARCH
      exact lines of the current file
      =======
      replacement lines
      >>>>>>> REPLACE
  Each SEARCH text must occur exactly once (after the earlier blocks are applied).
- `unified_diff`: `@@ -a,b +c,d @@` hunks; each hunk's context and removed lines must
  occur in the file (at the stated line, or else exactly once anywhere).
- `catalog` (the embedded CPU default): a JSON object {knob: value} over the target's
  catalog, e.g. {"N_LAYER": "6", "LEARNING_RATE": "1e-3"}; `catalog_schema` builds the
  JSON schema that constrains generation (without each knob's current value: no answer is empty).

`apply` never raises for anything a completion contains. A failure has one of FAILURES
and a message written for the policy to read next time; an edit that changes nothing is
`empty_edit`, never a silent no-op.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
from dataclasses import dataclass

from arrl.target import Knob, Region

FORMATS = ("search_replace", "unified_diff", "catalog")
FAILURES = ("no_match", "ambiguous_match", "outside_editable_region", "syntax_error", "empty_edit", "malformed")
MAX_COMPLETION_CHARS = 200_000

_SEARCH, _DIVIDER, _REPLACE = "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE"
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass(frozen=True)
class EditResult:
    source: str | None  # the new train.py, when the edit applied
    failure: str | None = None  # one of FAILURES, when it did not
    message: str = ""  # for the policy: what went wrong, or what changed
    diff: str = ""  # unified diff of the change (empty on failure)
    lines_added: int = 0
    lines_removed: int = 0

    @property
    def ok(self) -> bool:
        return self.failure is None


class _Failure(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _snip(text: str, n: int = 120) -> str:
    text = text.strip().replace("\n", "⏎")
    return text if len(text) <= n else text[: n - 1] + "…"


# ---- SEARCH/REPLACE ------------------------------------------------------------------
def _blocks(completion: str) -> list[tuple[str, str]]:
    lines = completion.split("\n")
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() != _SEARCH:
            if lines[i].strip() in (_DIVIDER, _REPLACE):  # a stray marker makes the blocks ambiguous
                raise _Failure("malformed", f"line {i + 1}: {lines[i].strip()!r} without an opening {_SEARCH!r}")
            i += 1
            continue
        try:
            mid = next(j for j in range(i + 1, len(lines)) if lines[j].strip() in (_DIVIDER, _SEARCH, _REPLACE))
            if lines[mid].strip() != _DIVIDER:
                raise StopIteration
            end = next(j for j in range(mid + 1, len(lines)) if lines[j].strip() in (_DIVIDER, _SEARCH, _REPLACE))
            if lines[end].strip() != _REPLACE:
                raise StopIteration
        except StopIteration:
            raise _Failure("malformed", f"block {len(blocks) + 1} starting at line {i + 1} is not closed as "
                                        f"{_SEARCH} / {_DIVIDER} / {_REPLACE}") from None
        blocks.append(("\n".join(lines[i + 1:mid]), "\n".join(lines[mid + 1:end])))
        i = end + 1
    if not blocks:
        raise _Failure("malformed", f"no {_SEARCH} ... {_REPLACE} block found")
    return blocks


def _apply_search_replace(source: str, completion: str) -> str:
    new = source
    for n, (search, replace) in enumerate(_blocks(completion), 1):
        if not search.strip():
            raise _Failure("empty_edit", f"block {n}: the SEARCH text is empty; quote the lines to replace")
        count = new.count(search)
        if count == 0:  # forgive trailing whitespace differences, nothing else
            pattern = "\n".join(re.escape(line.rstrip()) + r"[ \t]*" for line in search.split("\n"))
            found = list(re.finditer(pattern, new))
            if len(found) == 1:
                m = found[0]
                new = new[:m.start()] + replace + new[m.end():]
                continue
            count = len(found)
        if count == 0:
            raise _Failure("no_match", f"block {n}: SEARCH text not found in train.py: {_snip(search)!r}")
        if count > 1:
            raise _Failure("ambiguous_match", f"block {n}: SEARCH text occurs {count} times; include more "
                                              f"surrounding lines: {_snip(search)!r}")
        new = new.replace(search, replace, 1)
    return new


# ---- unified diff -----------------------------------------------------------------------
def _hunks(completion: str) -> list[tuple[int, list[str], list[str]]]:
    lines = completion.split("\n")
    hunks, i = [], 0
    while i < len(lines):
        m = _HUNK.match(lines[i])
        if not m:
            i += 1
            continue
        old, new = [], []
        i += 1
        while i < len(lines) and not _HUNK.match(lines[i]) and not lines[i].startswith(("--- ", "+++ ", "diff ")):
            line = lines[i]
            if line.startswith("\\"):  # "\ No newline at end of file"
                pass
            elif line.startswith("-"):
                old.append(line[1:])
            elif line.startswith("+"):
                new.append(line[1:])
            elif line.startswith(" ") or line == "":
                old.append(line[1:])
                new.append(line[1:])
            else:
                raise _Failure("malformed", f"hunk {len(hunks) + 1}: line {i + 1} starts with neither ' ', '-' nor "
                                            f"'+': {_snip(line)!r}")
            i += 1
        while old and new and old[-1] == "" and new[-1] == "":  # trailing blank lines of the completion
            old.pop()
            new.pop()
        hunks.append((int(m.group(1)), old, new))
    if not hunks:
        raise _Failure("malformed", "no '@@ -a,b +c,d @@' hunk found")
    return hunks


def _apply_unified_diff(source: str, completion: str) -> str:
    lines = source.split("\n")
    for n, (start, old, new) in enumerate(_hunks(completion), 1):
        if not old:
            raise _Failure("empty_edit", f"hunk {n} has no context or removed lines to anchor it")
        k = len(old)
        at = [p for p in range(len(lines) - k + 1) if lines[p:p + k] == old]
        if not at:
            raise _Failure("no_match", f"hunk {n}: its context and removed lines are not in train.py: "
                                       f"{_snip(chr(10).join(old))!r}")
        if len(at) > 1:
            if start - 1 not in at:
                raise _Failure("ambiguous_match", f"hunk {n}: its lines occur {len(at)} times and not at line "
                                                  f"{start}; add context")
            at = [start - 1]
        lines[at[0]:at[0] + k] = new
    return "\n".join(lines)


# ---- catalog (the knobs' current values and the schema are arrl.target's) ---------------------
def _apply_catalog(source: str, completion: str, catalog: tuple[Knob, ...]) -> str:
    text = completion.strip()
    if text.startswith("```"):  # a fenced JSON answer
        text = text.strip("`").removeprefix("json").strip()
    try:
        choice = json.loads(text)
    except ValueError as e:
        raise _Failure("malformed", f"not a JSON object: {e}") from None
    if not isinstance(choice, dict) or not choice:
        raise _Failure("malformed" if not isinstance(choice, dict) else "empty_edit",
                       "expected a non-empty JSON object of knob: value")
    knobs = {k.name: k for k in catalog}
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise _Failure("syntax_error", f"the current train.py does not parse: {e}") from None
    spans = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            spans[node.targets[0].id] = node.value
    offsets = [0]
    for line in source.split("\n"):
        offsets.append(offsets[-1] + len(line) + 1)
    edits = []
    for name, value in choice.items():
        if name not in knobs:
            raise _Failure("malformed", f"unknown knob {str(name)[:60]!r} (knobs: {', '.join(knobs)})")
        value = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        if value not in knobs[name].values:
            raise _Failure("malformed", f"{name}: {str(value)[:60]!r} is not one of {list(knobs[name].values)}")
        if name not in spans:
            raise _Failure("no_match", f"train.py has no top-level assignment {name} = ...")
        v = spans[name]
        edits.append((offsets[v.lineno - 1] + v.col_offset, offsets[v.end_lineno - 1] + v.end_col_offset, value))
    for a, b, value in sorted(edits, reverse=True):
        source = source[:a] + value + source[b:]
    return source


# ---- the one entry point ---------------------------------------------------------------
def diff_size(diff: str) -> tuple[int, int]:
    """(lines added, lines removed) of a unified diff."""
    lines = diff.splitlines()
    return (sum(1 for ln in lines if ln.startswith("+") and not ln.startswith("+++")),
            sum(1 for ln in lines if ln.startswith("-") and not ln.startswith("---")))


def _changed_lines(old: str, new: str) -> list[int]:
    """1-based line numbers of `old` that the edit replaces or inserts next to."""
    sm = difflib.SequenceMatcher(a=old.split("\n"), b=new.split("\n"), autojunk=False)
    out = []
    for tag, i1, i2, _, _ in sm.get_opcodes():
        if tag != "equal":
            out.extend(range(i1 + 1, i2 + 1) if i2 > i1 else [i1, i1 + 1])
    return out


def apply(source: str, completion: str, fmt: str = "search_replace", catalog: tuple[Knob, ...] = (),
          editable: tuple[Region, ...] = ()) -> EditResult:
    """Apply `completion` (in format `fmt`) to `source`. Never raises on bad completions."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown edit format {fmt!r} (known: {', '.join(FORMATS)})")
    if not isinstance(completion, str):
        return EditResult(None, "malformed", "the completion is not text")
    if len(completion) > MAX_COMPLETION_CHARS:
        return EditResult(None, "malformed", f"the completion has {len(completion)} characters, more than "
                                             f"{MAX_COMPLETION_CHARS}")
    if not completion.strip():
        return EditResult(None, "empty_edit", "the completion is empty")
    completion = completion.replace("\r\n", "\n")
    try:
        if fmt == "search_replace":
            new = _apply_search_replace(source, completion)
        elif fmt == "unified_diff":
            new = _apply_unified_diff(source, completion)
        else:
            new = _apply_catalog(source, completion, catalog)
        if new == source:
            raise _Failure("empty_edit", "the edit leaves train.py unchanged")
        if editable:
            allowed = {n for r in editable for n in range(r.first_line, r.last_line + 1)}
            outside = [n for n in _changed_lines(source, new) if n not in allowed]
            if outside:
                spans = ", ".join(f"{r.first_line}-{r.last_line}" for r in editable)
                raise _Failure("outside_editable_region", f"the edit changes line {outside[0]}; only lines {spans} "
                                                          f"may change")
        try:
            compile(new, "train.py", "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as e:
            line = getattr(e, "lineno", None)
            raise _Failure("syntax_error", f"the edited train.py does not compile: {getattr(e, 'msg', e)}"
                                           + (f" (line {line})" if line else "")) from None
    except _Failure as f:
        return EditResult(None, f.kind, str(f))
    except RecursionError:
        return EditResult(None, "malformed", "the completion is nested too deeply to parse")
    diff = "".join(difflib.unified_diff(source.splitlines(True), new.splitlines(True), "a/train.py", "b/train.py"))
    added, removed = diff_size(diff)
    return EditResult(new, None, f"applied: +{added} -{removed} lines", diff, added, removed)
