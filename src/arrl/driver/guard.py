"""Static edit policy: refuse (status `rejected`) edits that reach for what a training
script never needs.

The check compares the findings of the edited source with those of the incumbent, so a
target that legitimately uses something (and lists it in target.toml `allow`) keeps it,
and only what an edit *adds* is judged. Findings:
- imports of network, process, foreign-function and code-loading modules;
- imports of the environment's internals (only env.loader, env.model_io, env.progress and
  env.runtime are for targets);
- calls that spawn or signal processes or run dynamic code (os.system, os.fork, eval, ...);
- open() of a literal path outside the run's own directory (absolute, or with "..");
- fewer calls to model_io.save_model, or assignments into the env modules
  (monkeypatching how the model is saved or measured).
This is a first filter with clear messages for the policy; the sandbox is the wall.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

DENIED_MODULES = frozenset({
    "socket", "ssl", "http", "urllib", "urllib3", "requests", "httpx", "aiohttp", "ftplib", "smtplib", "telnetlib",
    "xmlrpc", "asyncio", "subprocess", "pty", "multiprocessing", "ctypes", "cffi", "mmap", "importlib", "marshal",
    "pickle", "shutil", "signal", "resource",
})
TARGET_ENV_MODULES = frozenset({"env", "env.loader", "env.model_io", "env.progress", "env.runtime"})
DENIED_CALLS = frozenset({
    "os.system", "os.popen", "os.fork", "os.forkpty", "os.kill", "os.killpg", "os.setsid", "os.execv", "os.execve",
    "os.execl", "os.execlp", "os.execvp", "os.spawnl", "os.spawnv", "os.posix_spawn", "os.remove", "os.unlink",
    "os.rmdir", "os.chmod", "os.symlink", "os.link", "eval", "exec", "compile", "__import__", "globals", "setattr",
    "delattr",
})
ENV_NAMES = frozenset({"env", "loader", "model_io", "progress", "runtime"})


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def findings(source: str, allow: frozenset[str] = frozenset()) -> list[str]:
    """What the policy objects to in `source`, one human-readable string each."""
    out = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names if node.module == "env"]
            for name in names:
                top = name.split(".")[0]
                if top in DENIED_MODULES and top not in allow and name not in allow:
                    out.append(f"imports {name}")
                if top == "env" and name not in TARGET_ENV_MODULES:
                    out.append(f"imports the environment's internals ({name})")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in DENIED_CALLS and name not in allow:
                out.append(f"calls {name}()")
            if name == "open" and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                path = node.args[0].value
                if path.startswith(("/", "~")) or ".." in path.split("/"):
                    out.append(f"opens {path!r} outside the run's directory")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                name = _dotted(t)
                if "." in name and name.split(".")[0] in ENV_NAMES:
                    out.append(f"assigns to {name}")
    saves = sum(1 for n in ast.walk(tree) if isinstance(n, ast.Call) and _dotted(n.func).endswith("save_model"))
    out.extend(["saves the model"] * saves)  # counted: an edit may not remove one
    return out


def check(old_source: str, new_source: str, allow: frozenset[str] = frozenset()) -> Verdict:
    """Reject what the edit adds (or, for saving the model, removes)."""
    try:
        new = findings(new_source, allow)
    except SyntaxError as e:
        return Verdict(False, f"does not parse: {e.msg}")
    try:
        old = findings(old_source, allow)
    except SyntaxError:
        old = []
    added = list(new)
    for f in old:
        if f in added:
            added.remove(f)
    added = [f for f in added if f != "saves the model"]
    if new.count("saves the model") < old.count("saves the model"):
        added.append("removes the call to model_io.save_model")
    if added:
        return Verdict(False, "the edit " + "; ".join(dict.fromkeys(added)))
    return Verdict(True)
