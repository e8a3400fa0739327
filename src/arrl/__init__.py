"""arrl (AutoResearch-RL): an LLM policy edits train.py, sandboxes train it, val_bpb is the reward."""

__version__ = "0.1.0"
