"""The architecture search: supernet, weight and architecture steps, REINFORCE, derivation, the run.

`python -m proxyless_tf.search` runs `proxyless_tf.cli.search` (see `__main__.py`)."""
