"""The run's git branch `arrl/<run>`: the baseline, then one commit per accepted edit.

The repository lives in `runs/<name>/git` (arrl never writes into the user's own checkout);
`git fetch runs/<name>/git arrl/<name>` brings the branch into any clone. With `[search] strategy =
"population"` each island also has a branch `arrl/<name>-island-<i>`: one commit per island best
(`commit_to`, written without touching the work tree). Each commit holds
train.py and a message with the experiment id, val_bpb and the diff. `commit_once` is
idempotent by experiment id, so a driver that died between recording an acceptance and
committing it commits it exactly once on resume.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path


class GitError(Exception):
    pass


class GitBranch:
    def __init__(self, root: Path, run: str):
        self.root = Path(root)
        self.name = f"arrl/{run}"

    def _git(self, *args: str, input: str | None = None) -> str:
        env = {**os.environ, "GIT_AUTHOR_NAME": "arrl", "GIT_AUTHOR_EMAIL": "arrl@localhost",
               "GIT_COMMITTER_NAME": "arrl", "GIT_COMMITTER_EMAIL": "arrl@localhost", "GIT_TERMINAL_PROMPT": "0"}
        r = subprocess.run(["git", "-C", str(self.root), *args], capture_output=True, text=True, input=input,
                           env=env)
        if r.returncode != 0:
            raise GitError(f"git {' '.join(args[:2])} in {self.root}: {r.stderr.strip()[:300]}")
        return r.stdout

    def ensure(self, baseline: str) -> None:
        """Create the repository and the branch with the baseline commit, once."""
        if not (self.root / ".git").exists():
            self.root.mkdir(parents=True, exist_ok=True)
            self._git("init", "-q", "-b", self.name)
        if not self._has_head():
            (self.root / "train.py").write_text(baseline)
            self._git("add", "train.py")
            self._git("commit", "-q", "-m", "baseline")

    def _has_head(self) -> bool:
        try:
            self._git("rev-parse", "--verify", "-q", "HEAD")
            return True
        except GitError:
            return False

    def find(self, exp_id: int, branch: str | None = None) -> str | None:
        try:
            out = self._git("log", "--format=%H %s", branch or self.name)
        except GitError:  # no such branch yet
            if branch is None:
                raise
            return None
        for line in out.splitlines():
            h, _, subject = line.partition(" ")
            if re.match(rf"exp {exp_id}:", subject):
                return h
        return None

    def commit_once(self, exp_id: int, source: str, subject: str, diff: str) -> str:
        found = self.find(exp_id)
        if found:
            return found
        (self.root / "train.py").write_text(source)
        self._git("add", "train.py")
        self._git("commit", "-q", "--allow-empty", "-F", "-", input=f"{subject}\n\n{diff}\n")
        return self._git("rev-parse", "HEAD").strip()

    def commit_to(self, branch: str, exp_id: int, source: str, subject: str, diff: str) -> str:
        """Commit `source` as train.py on another branch of the repository (a population's island), once per
        experiment, without touching the work tree of `arrl/<run>`; the branch starts at the baseline commit."""
        found = self.find(exp_id, branch)
        if found:
            return found
        try:
            parent = self._git("rev-parse", "--verify", "-q", f"refs/heads/{branch}").strip()
        except GitError:
            parent = self._git("rev-list", "--max-parents=0", self.name).split()[0]
        blob = self._git("hash-object", "-w", "--stdin", input=source).strip()
        tree = self._git("mktree", input=f"100644 blob {blob}\ttrain.py\n").strip()
        commit = self._git("commit-tree", tree, "-p", parent, input=f"{subject}\n\n{diff}\n").strip()
        self._git("update-ref", f"refs/heads/{branch}", commit)
        return commit

    def log(self, branch: str | None = None) -> list[str]:
        return self._git("log", "--format=%s", branch or self.name).splitlines()
