"""The frozen environment of arrl: data, tokenizer, loader, progress protocol, evaluation.

Mounted read-only into every sandbox and hashed into every result. A target imports
`env.runtime`, `env.loader`, `env.progress` and `env.model_io`; everything else runs
outside the training process. This package never imports `arrl`.
"""
