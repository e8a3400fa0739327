"""Edit application: each format, each typed failure, and a fuzz test that it never raises."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrl import paths, target
from arrl.driver import edits
from arrl.driver.edits import FAILURES

TINY = target.load("tiny", paths.targets_dir())
SRC = TINY.source()


def sr(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def test_search_replace_applies_and_reports_the_diff():
    r = edits.apply(SRC, "I will deepen the model.\n" + sr("N_LAYER = 4  # transformer blocks",
                                                            "N_LAYER = 6  # transformer blocks"))
    assert r.ok and "N_LAYER = 6  # transformer blocks" in r.source
    assert (r.lines_added, r.lines_removed) == (1, 1) and "+N_LAYER = 6" in r.diff


def test_search_replace_several_blocks_in_order():
    r = edits.apply(SRC, sr("N_HEAD = 4", "N_HEAD = 8") + sr("N_EMBD = 128", "N_EMBD = 256"))
    assert r.ok and "N_HEAD = 8" in r.source and "N_EMBD = 256" in r.source


@pytest.mark.parametrize("completion, failure", [
    (sr("N_LAYER = 99", "N_LAYER = 6"), "no_match"),
    (sr("import", "import"), "ambiguous_match"),
    (sr("", "x = 1"), "empty_edit"),
    (sr("N_LAYER = 4", "N_LAYER = 4"), "empty_edit"),
    (sr("N_LAYER = 4", "N_LAYER = = 4"), "syntax_error"),
    ("<<<<<<< SEARCH\nN_LAYER = 4\n=======\nN_LAYER = 6\n", "malformed"),
    ("just some prose, no block", "malformed"),
    ("=======\n>>>>>>> REPLACE\n", "malformed"),
    (sr("N_LAYER = 4", ">>>>>>> REPLACE"), "malformed"),  # a marker inside the replacement: where does it end?
    (sr("N_LAYER = 4", "N_LAYER = 6") + "=======\n", "malformed"),
    ("", "empty_edit"),
])
def test_search_replace_failures_are_typed(completion, failure):
    r = edits.apply(SRC, completion)
    assert not r.ok and r.source is None
    assert r.failure == failure, r.message
    assert r.message


def test_trailing_whitespace_is_forgiven_nothing_else():
    assert edits.apply(SRC, sr("N_LAYER = 4  # transformer blocks   ", "N_LAYER = 2")).ok
    assert edits.apply(SRC, sr("n_layer = 4", "N_LAYER = 2")).failure == "no_match"


def test_unified_diff_applies():
    diff = "--- a/train.py\n+++ b/train.py\n@@ -18,3 +18,3 @@\n N_LAYER = 4  # transformer blocks\n" \
           "-N_HEAD = 4  # attention heads per block\n+N_HEAD = 2  # attention heads per block\n" \
           " N_EMBD = 128  # residual stream width\n"
    r = edits.apply(SRC, diff, "unified_diff")
    assert r.ok, r.message
    assert "N_HEAD = 2  # attention heads per block" in r.source


@pytest.mark.parametrize("diff, failure", [
    ("@@ -1,1 +1,1 @@\n-nothing like this\n+x = 1\n", "no_match"),
    ("@@ -1,0 +1,1 @@\n+x = 1\n", "empty_edit"),
    ("no hunks here", "malformed"),
    ("@@ -18,1 +18,1 @@\n-N_LAYER = 4  # transformer blocks\n+N_LAYER = (\n", "syntax_error"),
    ("@@ -1,1 +1,1 @@\n*weird line\n", "malformed"),
])
def test_unified_diff_failures_are_typed(diff, failure):
    assert edits.apply(SRC, diff, "unified_diff").failure == failure


def test_catalog_edit_applies_values_as_written():
    r = edits.apply(SRC, json.dumps({"LEARNING_RATE": "1e-3", "N_LAYER": "6"}), "catalog", TINY.catalog)
    assert r.ok, r.message
    assert "LEARNING_RATE = 1e-3  # peak AdamW" in r.source and "N_LAYER = 6  # transformer" in r.source


@pytest.mark.parametrize("answer, failure", [
    ('{"N_LAYER": "5"}', "malformed"),
    ('{"DEPTH": "6"}', "malformed"),
    ('{}', "empty_edit"),
    ('{"N_LAYER": "4"}', "empty_edit"),
    ('[1, 2]', "malformed"),
    ('{"N_LAYER": ', "malformed"),
])
def test_catalog_failures_are_typed(answer, failure):
    assert edits.apply(SRC, answer, "catalog", TINY.catalog).failure == failure


def test_catalog_schema_lists_every_knob_and_value():
    schema = target.catalog_schema(TINY.catalog)
    assert schema["additionalProperties"] is False and schema["minProperties"] == 1
    assert schema["properties"]["LEARNING_RATE"]["enum"] == ["3e-4", "1e-3", "2e-3", "3e-3", "5e-3", "1e-2"]


def test_catalog_schema_leaves_out_current_values():
    """Given the incumbent's values, no answer the schema allows can leave train.py unchanged."""
    import itertools

    import jsonschema

    current = target.catalog_values(SRC, TINY.catalog)
    schema = target.catalog_schema(TINY.catalog, current)
    assert schema["properties"]["LEARNING_RATE"]["enum"] == [v for v in ["3e-4", "1e-3", "2e-3", "3e-3", "5e-3", "1e-2"]
                                                            if v != current["LEARNING_RATE"]]
    for k in TINY.catalog:  # every knob, each allowed value: a change
        for v in schema["properties"].get(k.name, {}).get("enum", []):
            jsonschema.validate({k.name: v}, schema)
            assert edits.apply(SRC, json.dumps({k.name: v}), "catalog", TINY.catalog).ok
    for k, v in itertools.islice(current.items(), 3):  # restating a current value is outside the schema
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({k: v}, schema)
    # a knob whose only value is the current one is left out; with none left, the plain schema
    one = (target.Knob("A", ("1",), "1"), target.Knob("B", ("1", "2"), "1"))
    assert list(target.catalog_schema(one, {"A": "1", "B": "1"})["properties"]) == ["B"]
    assert target.catalog_schema(one[:1], {"A": "1"}) == target.catalog_schema(one[:1])


def test_editable_regions_are_enforced(make_target):
    tgt = make_target('profile = "shakespeare"\n[[editable]]\nbegin = "# begin"\nend = "# end"\n',
                      "A = 1\n# begin\nB = 2\n# end\nC = 3\n")
    src = tgt.source()
    assert edits.apply(src, sr("B = 2", "B = 5"), editable=tgt.editable).ok
    r = edits.apply(src, sr("C = 3", "C = 5"), editable=tgt.editable)
    assert r.failure == "outside_editable_region" and "only lines 3-3" in r.message


# ---- property and fuzz tests ------------------------------------------------------------
LINES = SRC.split("\n")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(LINES) - 1), st.integers(1, 4), st.text(max_size=60))
def test_any_unique_span_can_be_replaced(start, length, replacement):
    search = "\n".join(LINES[start:start + length])
    r = edits.apply(SRC, sr(search, replacement))
    assert r.failure in (None, *FAILURES)
    if r.ok:
        # the completion's CRLF become LF; a trailing CR of the replacement pairs with the block's own newline
        expect = (replacement + "\n").replace("\r\n", "\n")[:-1]
        assert SRC.count(search) == 1 and r.source == SRC.replace(search, expect, 1)
    elif search.strip() and SRC.count(search) > 1:
        assert r.failure == "ambiguous_match"


def _mutations(rng: random.Random) -> str:
    pieces = [sr("N_LAYER = 4", "N_LAYER = 6"), "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE", "@@ -1,2 +1,2 @@",
              "-N_LAYER = 4", "+N_LAYER = 6", " ", '{"N_LAYER": "6"}', "```json", "```", "\x00\xff\ud7ff", "\t",
              SRC[rng.randrange(len(SRC)):][:200], "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(20))]
    kind = rng.random()
    if kind < 0.2:  # binary junk
        return bytes(rng.randrange(256) for _ in range(rng.randrange(300))).decode("latin-1")
    if kind < 0.25:  # huge output
        return "x" * rng.choice([10, 199_999, 200_001, 1_000_000])
    text = "\n".join(rng.choice(pieces) for _ in range(rng.randrange(1, 12)))
    if kind < 0.6:  # truncate anywhere
        text = text[: rng.randrange(len(text) + 1)]
    if kind > 0.9:  # nested markers
        text = sr(text, text)
    return text


def test_fuzz_ten_thousand_completions_never_raise():
    rng = random.Random(1234)
    seen = {f: 0 for f in (None, *FAILURES)}
    for i in range(10_000):
        fmt = edits.FORMATS[i % 3]
        r = edits.apply(SRC, _mutations(rng), fmt, TINY.catalog)
        assert r.failure in seen
        assert (r.source is None) == (r.failure is not None)
        if r.ok:
            compile(r.source, "train.py", "exec")
        seen[r.failure] += 1
    assert seen[None] > 0 and seen["malformed"] > 0 and seen["no_match"] + seen["ambiguous_match"] > 0
