"""The learner: PPO/GRPO updates of the policy's LoRA adapter on RLlib.

Owns: learner.py (Learner: a batch of samples in, a new adapter version out), ppo.py (the loss
and RLlib's TorchLearner), rl_module.py (the LoRA policy as an RLModule), advantages.py,
grammar.py (the masks of constrained decoding), trajectory.py (samples as Arrow batches).
Does not own: which results become samples (arrl.driver.learning) or serving the adapter.
May import: arrl.policy.adapters, arrl.policy.models, arrl.paths; never the driver.
"""
