"""The in-product benchmarks behind `arrl bench`: research.py (the loop against random search,
Ray Tune and the synthetic optimum), tune.py (the Ray Tune + ASHA baseline), replay.py (an
early-abort rule replayed on recorded curves). The scripts under the repository's bench/ folder
measure arrl itself; these compare research methods for users.

May import anything of arrl; nothing in the loop imports it.
"""
