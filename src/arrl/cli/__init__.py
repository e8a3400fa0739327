"""The `arrl` command line.

    arrl prepare [--profile P]                   prepare a profile's data (hashes, manifest)
    arrl run TARGET [--budget S] [--source FILE] train one script in the sandbox, evaluate it
    arrl launch [CONFIG] [--name N] [--address A] [--submit] [--resume NAME]   the research loop
                [--warm-start RUN[:VERSION]]     ... its learner starting from another run's adapter
                [--mlflow URI] [--wandb PROJECT] [--webhook URL]   ... also tracked there ([track])
    arrl learn NAME --from RUN [RUN ...]         a learner trained offline on past runs' ledgers
    arrl status [NAME] [--watch]                 a run's state from its ledger
    arrl config [NAME | FILE]                    the config a run used (or a file resolves to), every field documented
    arrl stop NAME                               ask a run's driver to stop
    arrl track NAME [--mlflow URI] [--wandb P] [--webhook URL]   send what a run's trackers missed
    arrl export NAME                             Parquet tables and results.tsv of a run
    arrl report NAME                             progress.png, reward/KL plots, summary.html of a run
    arrl report NAME NAME ... [--chain]          several runs' best val_bpb on the same axes
    arrl image build                             build the self-contained CPU sandbox image (arrl-sandbox:cpu)

Exit codes: 0 success (for `run`: status ok), 1 the run ended in another status,
2 bad input (unknown target, missing data, unreadable file, bad option): one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from arrl.cli.common import UsageError

COMMANDS = {"prepare": "run", "run": "run", "launch": "loop", "learn": "loop", "serve": "loop", "stop": "loop",
            "status": "inspect", "config": "inspect", "export": "inspect", "report": "inspect", "image": "inspect",
            "bench": "bench", "track": "loop"}  # command -> the module of arrl.cli that holds cmd_<command>
# arrl.bench.research.METHODS, written out so that parsing imports no benchmark (tests/cli/test_cli.py checks them)
RESEARCH_METHODS = ("random,population,random-search,tune,tune-warm,optuna,optuna-warm,frozen,rl,population-rl,"
                    "rl-frozen")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    from env import profiles, web

    ap = _Parser(prog="arrl", description="AutoResearch-RL: an LLM policy that learns to improve train.py.")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("prepare", help="prepare a profile's data into Parquet shards with a manifest")
    p.add_argument("--profile", default="shakespeare", choices=sorted(profiles.PROFILES))
    p.add_argument("--data-home", type=Path, help="root of prepared data (default: $ARRL_DATA_HOME or ~/.cache/arrl/data)")
    p.add_argument("--base-url", default=web.DEFAULT_BASE_URL, help="web profile: base URL of the Parquet shards")
    p.add_argument("--shards", type=int, default=8, help="web profile: training shards to download")
    p.add_argument("--val-index", type=int, default=web.DEFAULT_VAL_INDEX, help="web profile: validation shard index")
    p.add_argument("--test-index", type=int, default=None,
                   help="web profile: the sealed test shard's index (default: the one before --val-index)")
    p.add_argument("--tokenizer-max-chars", type=int, default=250_000_000, help="web profile: BPE training text")
    p.add_argument("--verify", action="store_true", help="only re-check the sha256 of every prepared file")

    r = sub.add_parser("run", help="train one train.py in the sandbox and evaluate it")
    r.add_argument("target", help="target name (a folder of targets/) or path to a target folder")
    r.add_argument("--budget", type=float, help="training budget in seconds (default: the target's)")
    r.add_argument("--source", type=Path, help="run this file instead of the target's train.py")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--isolation", default="auto", choices=["auto", "bwrap", "none"])
    r.add_argument("--threads", type=int, help="CPU threads for the run (default: its cores)")
    r.add_argument("--cores", default="", help="confine the run to these CPU cores, e.g. 1 or 0-3 (default: not pinned)")
    r.add_argument("--data-home", type=Path, help="root of prepared data")
    r.add_argument("--runs-dir", type=Path, help="where run directories go (default: $ARRL_RUNS_DIR or ./runs)")
    r.add_argument("--json", action="store_true", help="print the outcome as JSON")

    la = sub.add_parser("launch", help="run the research loop (no CONFIG: the embedded CPU default)")
    la.add_argument("config", nargs="?", type=Path, help="launch config (TOML); see arrl.config")
    la.add_argument("--name", help="run name (default: <target>-<date>-<time>)")
    la.add_argument("--address", help="Ray cluster: auto, HOST:6379 or ray://HOST:10001 (default: start a local Ray);"
                                      " with --submit the dashboard, http://HOST:8265")
    la.add_argument("--submit", action="store_true", help="run on the cluster as a Ray job that survives this client "
                                                         "disconnecting; prints the job id and how to follow it")
    la.add_argument("--resume", metavar="NAME", help="continue the run NAME from its ledger")
    la.add_argument("--warm-start", metavar="RUN[:VERSION]", help="start the learner from another run's adapter (its "
                                                                  "last version, or VERSION); [learner] warm_start")
    la.add_argument("--runs-dir", type=Path, help="where runs live (default: $ARRL_RUNS_DIR or ./runs)")
    _track_flags(la)

    tk = sub.add_parser("track", help="send what a run's trackers and webhook have not received (from its ledger)")
    tk.add_argument("name", help="run name")
    tk.add_argument("--runs-dir", type=Path)
    _track_flags(tk)

    st = sub.add_parser("status", help="a run's state: best val_bpb, experiments by status, stop reason")
    st.add_argument("name", nargs="?", help="run name (default: the most recent run)")
    st.add_argument("--watch", action="store_true", help="a live view (workers, best val_bpb, recent outcomes, the "
                                                         "learner) redrawn every second until the run finishes or Ctrl-C; "
                                                         "plain lines where stdout is not a terminal")
    st.add_argument("--runs-dir", type=Path)

    co = sub.add_parser("config", help="print the config a run used, every field with its doc (no NAME: the defaults)")
    co.add_argument("name", nargs="?", help="a run's name, or a config file (.toml)")
    co.add_argument("--runs-dir", type=Path)

    le = sub.add_parser("learn", help="train a learner offline on past runs' ledgers; launch --warm-start NAME uses it")
    le.add_argument("name", help="the new learner's run name")
    le.add_argument("--from", dest="sources", nargs="+", required=True, metavar="RUN", help="runs to learn from")
    le.add_argument("--config", type=Path, help="launch config whose [policy] model and [learner] settings to use "
                                                "(default: the first source's)")
    le.add_argument("--passes", type=int, default=1, help="passes over the samples (default 1)")
    le.add_argument("--warm-start", metavar="RUN[:VERSION]", help="start from another run's adapter, not the base")
    le.add_argument("--runs-dir", type=Path)

    so = sub.add_parser("stop", help="ask a run's driver to stop (it finishes recording and exits)")
    so.add_argument("name")
    so.add_argument("--runs-dir", type=Path)

    ex = sub.add_parser("export", help="write a run's ledger as Parquet tables and results.tsv")
    ex.add_argument("name")
    ex.add_argument("--runs-dir", type=Path)

    rp = sub.add_parser("report", help="write a run's figures and a self-contained HTML summary; with several runs, "
                                       "their best val_bpb on the same axes")
    rp.add_argument("names", nargs="*", metavar="NAME", help="run name (default: the most recent run); several: "
                                                            "compare them")
    rp.add_argument("--chain", action="store_true", help="several runs end to end, in the order given (a run and "
                                                         "the run warm-started from it)")
    rp.add_argument("--out", type=Path, help="output folder (default: runs/<name>/report; several runs: "
                                             "runs/compare/<name>+<name>...)")
    rp.add_argument("--runs-dir", type=Path)

    be = sub.add_parser("bench", help="measure the search: replay early abort, compare against baselines")
    bsub = be.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    ab = bsub.add_parser("abort", help="replay recorded runs' learning curves under an early-abort rule")
    ab.add_argument("runs", nargs="+", metavar="RUN", help="run names (under --runs-dir) or run directories")
    ab.add_argument("--z", type=float, default=None, help="confidence of an abort (default: [search] abort_z)")
    ab.add_argument("--margin", type=float, default=None, help="loss margin (default: [search] abort_margin)")
    ab.add_argument("--every", type=float, default=None, help="check at each this fraction of the budget")
    ab.add_argument("--min-frac", type=float, default=None, help="never abort before this fraction of the budget")
    ab.add_argument("--budget", type=float, help="the runs' training budget in seconds (default: from each run)")
    ab.add_argument("--grid", action="store_true", help="replay a grid of rules and name the one to use")
    ab.add_argument("--max-false", type=float, default=0.05,
                    help="--grid: most accepted candidates a chosen rule may abort, as a fraction (default 0.05)")
    ab.add_argument("--max-lost", type=float, default=0.2,
                    help="--grid: most improvements (accepted or not) a chosen rule may abort, as a fraction (default 0.2)")
    ab.add_argument("--json", action="store_true", help="print the results as JSON")
    ab.add_argument("--runs-dir", type=Path)
    nv = bsub.add_parser("novelty", help="replay recorded runs: what answering near-duplicates without training "
                                         "would save and lose")
    nv.add_argument("runs", nargs="+", metavar="RUN", help="run names (under --runs-dir) or run directories")
    nv.add_argument("--thresholds", type=float, nargs="+", help="distances at or below which a candidate counts as "
                                                                "near (default: 0 0.1 0.17 0.2 0.25 0.34 0.5)")
    nv.add_argument("--distance", default="auto", choices=["auto", "source"],
                    help="auto: as the driver measures (catalog settings of one script by knob steps, else by "
                         "source lines); source: by source lines for every pair, as [search] novelty_source would "
                         "on free-form edits")
    nv.add_argument("--json", action="store_true", help="print the results as JSON")
    nv.add_argument("--runs-dir", type=Path)
    rs = bsub.add_parser("research", help="the loop against random search, Ray Tune + ASHA and a frozen policy")
    rs.add_argument("--target", required=True, help="a target with a catalog (a folder of targets/ or a path)")
    rs.add_argument("--experiments", type=int, required=True, help="sandbox runs per method and seed")
    rs.add_argument("--seeds", type=int, default=3, help="seeds per method: 0 .. S-1 (default 3)")
    rs.add_argument("--methods", default=",".join(("random", "tune", "frozen", "rl")),
                    help=f"comma-separated subset of {RESEARCH_METHODS} (default: random,tune,frozen,rl)")
    rs.add_argument("--config", type=Path, help="launch config every method starts from (workers, sandbox, "
                                                "budget, policy model, learner); default: arrl's defaults, with "
                                                "the simulated sandbox for the synthetic target "
                                                "and family members")
    rs.add_argument("--early-abort", action="store_true",
                    help="the loop methods stop candidates that trail their parent's curve ([search] early_abort), "
                         "as Tune's ASHA stops trials")
    rs.add_argument("--searcher", default="optuna", choices=["optuna", "random"], help="Tune's search algorithm")
    rs.add_argument("--warm-from", type=Path, nargs="+", metavar="TUNE_RUN",
                    help="tune-warm, optuna-warm: Tune run folders whose trials Optuna is told first (e.g. other "
                         "family members')")
    rs.add_argument("--adapter-from", type=Path, metavar="RUN_DIR",
                    help="rl-frozen: the learning run whose last adapter is served frozen (rl starts from it too)")
    rs.add_argument("--out", type=Path, help="output folder (default: ./bench-research/<target>)")

    fm = bsub.add_parser("family", help="write a family of simulated targets (members with briefs), some held out")
    fm.add_argument("out", type=Path, help="a new folder: one target folder per member, and family.json")
    fm.add_argument("--seed", type=int, default=0, help="the family (default 0)")
    fm.add_argument("--members", type=int, default=12, help="members in all (default 12)")
    fm.add_argument("--held-out", type=int, default=4, help="the last this many are held out (default 4)")

    tr = bsub.add_parser("transfer", help="learning across runs: methods on a family's held-out members, the "
                                          "warm start from its training members")
    tr.add_argument("family", type=Path, help="a family folder written by `arrl bench family`")
    tr.add_argument("--experiments", type=int, required=True, help="sandbox runs per method, member and seed")
    tr.add_argument("--seeds", type=int, default=3, help="seeds per held-out member: 0 .. S-1 (default 3)")
    tr.add_argument("--methods", default="random,tune,tune-warm,optuna,optuna-warm",
                    help=f"comma-separated subset of {RESEARCH_METHODS} "
                         "(default: random,tune,tune-warm,optuna,optuna-warm); rl-frozen first trains the policy "
                         "on the training members, one run after another (the perpetual run)")
    tr.add_argument("--config", type=Path, help="launch config every method starts from (policy, workers, budget); "
                                                "the sandbox is always the simulated one")

    sv = sub.add_parser("serve", help="serve a policy model and a trained adapter as an OpenAI-compatible API")
    sv.add_argument("--model", help="the base model: smollm2, tiny-random, a model folder or a Hugging Face id "
                                    "(default: the adapter's recorded base, else smollm2)")
    sv.add_argument("--adapter", help="an adapter folder, or RUN / RUN:VERSION (a run's learner checkpoints)")
    sv.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    sv.add_argument("--threads", type=int, help="CPU threads of the engine (default: all cores)")
    sv.add_argument("--runs-dir", type=Path)

    im = sub.add_parser("image", help="build arrl's sandbox images on the local Docker engine")
    im.add_argument("action", choices=["build"], help="build: the self-contained CPU sandbox image, offline")
    im.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def _track_flags(p) -> None:
    p.add_argument("--mlflow", metavar="URI", help="also track in MLflow: file:PATH, sqlite:///PATH, http(s)://HOST:PORT"
                                                   " ([track] mlflow)")
    p.add_argument("--wandb", metavar="PROJECT", help="also track in W&B, offline unless [track] wandb_mode = "
                                                      "'online' ([track] wandb)")
    p.add_argument("--webhook", metavar="URL", help="notifications to a Slack-compatible webhook ([track] webhook)")


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        module = importlib.import_module(f"arrl.cli.{COMMANDS[args.command]}")
        return getattr(module, f"cmd_{args.command}")(args)
    except UsageError as e:
        print(f"arrl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("arrl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
