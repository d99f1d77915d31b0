"""The names of the architecture step's latency terms and their default constants.

Apart from the supernet (which computes them) so that the CLI can check a `--latency_loss`
before TensorFlow is imported: one list, read by the flag's help, the config check and
`SuperNet.compile`.

  mul#log     α·CE·(log E / log T)^β                       (the paper)
  add#linear  CE + λ(E − T)/T                               (the paper)
  add#abs     CE + λ|E − T|/T       pulls toward T from both sides
  add#hinge   CE + λ·max(0, E − T)/T  a budget: no pull once E is under T
"""

LATENCY_LOSSES = ("mul#log", "add#linear", "add#abs", "add#hinge")
DEFAULT_LOSS_PARAMS = {"mul#log": {"alpha": 0.2, "beta": 0.3}, "add#linear": {"lambda": 0.1},
                       "add#abs": {"lambda": 0.1}, "add#hinge": {"lambda": 0.1}}
