"""The suite's two tiers. `bash scripts/test.sh` (CI) runs every test with the long ones at CI strength;
`bash scripts/test.sh --full` runs them at full strength (every chaos trial, every learning seed). Both tiers
make the same assertions; the full one makes them over more trials, seeds or cases."""

from __future__ import annotations

import os

TIER = os.environ.get("ARRL_TEST_TIER", "ci")
if TIER not in ("ci", "full"):
    raise SystemExit(f"ARRL_TEST_TIER={TIER!r}: expected ci or full")


def tier(ci, full):
    """`ci` in the CI tier (the default), `full` in the full tier."""
    return full if TIER == "full" else ci
