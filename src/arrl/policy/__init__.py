"""The policy: from a research state to proposed edits.

Owns: server.py (PolicyServer: a vLLM server we run, with LoRA versions and restarts),
vllm_server.py (the server process and its guard), client.py (OpenAI-compatible requests,
ExternalPolicy), baselines.py (scripted and random policies), adapters.py (adapter files and
hashes), models.py (the base models and their files), prompt.py with prompts/ (the versioned
prompts), proposal.py (what a policy returns), serve.py (`arrl serve`).
Does not own: which proposal runs (the driver) or how the adapter is trained (the learner).
May import: arrl.target, arrl.paths, arrl.ops; never the driver, the learner or the report.
"""
