"""What makes two programs the same: a source's sha256, and its normalised form (comments and formatting
removed by an AST round trip) that de-duplication, pooling and the archive key programs by."""

from __future__ import annotations

import ast
import hashlib


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def normalize(source: str) -> str:
    """Source with comments and formatting removed (AST round trip), for de-duplication."""
    try:
        return ast.unparse(ast.parse(source))
    except (SyntaxError, ValueError, RecursionError):
        return source
