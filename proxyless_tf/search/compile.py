"""`SuperNet.compile`: both optimizers, the latency term of the architecture loss and the schedule.

Also the Keras compile round trip (`get_compile_config` / `compile_from_config`), so a `SuperNet`
reloaded from `.keras` is compiled as it was saved (optimizers, their state, the loss and target).
"""

import math

import keras

from proxyless_tf.errors import ConfigError
from proxyless_tf.search.config import check_algorithm, default
from proxyless_tf.search.latency_losses import DEFAULT_LOSS_PARAMS, LATENCY_LOSSES
from proxyless_tf.search.weight_step import GLOBAL_OPTIONS, refuse_optimizer_options

# Keras optimizers whose update of an element depends on the rest of its variable (trust ratio,
# factored or relative second moments): a segment of a variable cannot be updated alone
NOT_ELEMENTWISE = ("Lamb", "Adafactor", "Muon")

LATENCY_PROBS = ("softmax", "pair")


class SearchCompile:
    """`compile` and the architecture loss of `SuperNet` (a mixin)."""

    def compile(self, weight_optimizer=None, arch_optimizer=None, latency_loss=default("latency_loss"),
                target_ms=None, loss_params=None, arch_every=default("arch_every"),
                warmup_epochs=default("warmup_epochs"), reinforce_w=default("reinforce_w"),
                baseline_decay=default("reinforce_baseline_decay"), latency_fn=None,
                reinforce_samples=default("reinforce_samples"), reinforce_w_under=default("reinforce_w_under"),
                latency_probs="softmax", **kwargs):
        """Set both optimizers (built here), the latency loss and the schedule of arch steps.

        Args:
            weight_optimizer: optimizer of the network weights (default SGD Nesterov 0.9, lr 0.025).
                Except in mode `full` it is applied per group of weights (`weight_step.py`), so
                `global_clipnorm`, `use_ema` and `gradient_accumulation_steps` are refused.
            arch_optimizer: optimizer of α (default Adam lr 1e-3, betas (0, 0.999), as the paper).
            latency_loss: `mul#log` α·CE·(log E / log T)^β, `add#linear` CE + λ(E − T)/T,
                `add#abs` CE + λ|E − T|/T (pulls toward T from both sides), `add#hinge`
                CE + λ·max(0, E − T)/T (a budget: no pull at all once E is under T, so there the
                choice is left to CE alone), or None (CE only).
            target_ms: T, the latency reference; must lie inside the space's reachable range.
            loss_params: overrides of {alpha, beta} / {lambda}.
            arch_every: an architecture step every this many weight steps.
            warmup_epochs: epochs of weight-only training first.
            reinforce_w: `reinforce` mode: w of the reward acc × (T / lat)^w. There any
                latency_loss but None means this latency-weighted reward (None: accuracy).
            baseline_decay: `reinforce` mode: decay of the moving-average reward baseline.
            latency_fn: `reinforce` mode: optional `fn(arch) -> ms` used instead of the table
                (non-differentiable: a measurement on a device, say). Under a strategy every
                replica calls it for every draw (concurrently, from its own thread) and the
                results are averaged: a device measurement there is timed under that load.
                Not saved by `get_compile_config` (it is code): pass it again after a reload.
            reinforce_samples: `reinforce` mode: architectures drawn per update (K; 10 as the
                official code's `rl_batch_size`), their gradients averaged against the batch's
                mean reward.
            reinforce_w_under: `reinforce` mode: the reward's exponent at or under the target
                (None: reinforce_w; 0 with reinforce_w=1: MnasNet's hard constraint).
            latency_probs: mode `two`: the probabilities E of the architecture loss weighs the
                latencies with: `softmax` (the paper's formula: softmax(α) over every op, so every
                α of a layer gets a latency gradient) or `pair` (the official code: softmax over
                the two sampled ops only, so only they do; `MixedOp` compares the two).
        """
        weight_optimizer = weight_optimizer or keras.optimizers.SGD(0.025, momentum=0.9, nesterov=True)
        if self.mode != "full":
            refuse_optimizer_options(weight_optimizer, "weight_optimizer", GLOBAL_OPTIONS,
                                     "the search's weight step (it applies the optimizer per group of weights)",
                                     "drop it, or clip per variable with clipnorm")
        inner = getattr(weight_optimizer, "inner_optimizer", weight_optimizer)
        if self.mode != "full" and any(m.nested is not None for m in self.mixed_ops) and isinstance(
                inner, tuple(getattr(keras.optimizers, n) for n in NOT_ELEMENTWISE if hasattr(keras.optimizers, n))):
            raise ConfigError("<compile>", "weight_optimizer", f"{type(inner).__name__} scales each variable's "
                              "update by the whole variable, and a nested supernet holds every candidate's batch "
                              "norm in one variable per role", "use SGD, Adam, AdamW or another element-wise "
                              "optimizer, or weight_sharing='independent'")
        arch_optimizer = arch_optimizer or keras.optimizers.Adam(1e-3, beta_1=0.0, beta_2=0.999)
        if latency_loss is not None and latency_loss not in LATENCY_LOSSES:
            raise ConfigError("<compile>", "latency_loss", f"unknown latency loss {latency_loss!r}",
                              f"use one of {LATENCY_LOSSES}")
        reinforce_fn = self.mode == "reinforce" and latency_fn is not None
        if latency_loss is not None and self.latency_table is None and not reinforce_fn:
            raise ConfigError("<compile>", "latency_table", "a latency loss needs a latency table",
                              "pass latency_table= to SuperNet, or latency_loss=None")
        if int(arch_every) < 1 or int(warmup_epochs) < 0:
            raise ConfigError("<compile>", "arch_every/warmup_epochs",
                              f"arch_every={arch_every}, warmup_epochs={warmup_epochs}",
                              "use arch_every >= 1 and warmup_epochs >= 0")
        if latency_probs not in LATENCY_PROBS or (latency_probs == "pair" and self.mode != "two"):
            raise ConfigError("<compile>", "latency_probs", f"{latency_probs!r} with mode={self.mode!r}",
                              f"use one of {LATENCY_PROBS}; 'pair' only in mode 'two' (the only mode with pairs)")
        super().compile(optimizer=weight_optimizer, **kwargs)
        self.arch_optimizer = arch_optimizer
        self.latency_loss = latency_loss
        self.latency_probs = latency_probs
        self.loss_params = dict(DEFAULT_LOSS_PARAMS.get(latency_loss, {}))
        self.loss_params.update(loss_params or {})
        if self.mode == "reinforce":
            check_algorithm(reinforce_samples=reinforce_samples, reinforce_w_under=reinforce_w_under,
                            source="<compile>", prefix="")
            self.reinforce_w, self.baseline_decay, self.latency_fn = float(reinforce_w), float(baseline_decay), latency_fn
            self.reinforce_samples = int(reinforce_samples)
            self.reinforce_w_under = None if reinforce_w_under is None else float(reinforce_w_under)
        if latency_loss is not None and self.mode == "reinforce" and self.latency_table is None:
            self.target_ms = self._check_target_value(target_ms)
        elif latency_loss is not None:
            self.target_ms = self._check_target(target_ms, "reward" if self.mode == "reinforce" else latency_loss)
        else:
            self.target_ms = target_ms
        self.arch_every = int(arch_every)
        self.warmup_epochs = int(warmup_epochs)
        self.arch_enabled.assign(1 if self.warmup_epochs == 0 else 0)
        self.optimizer.build(self.weight_variables)
        self.arch_optimizer.build(self.arch_variables)
        self._compile_args = dict(
            latency_loss=latency_loss, target_ms=self.target_ms, loss_params=loss_params, arch_every=self.arch_every,
            warmup_epochs=self.warmup_epochs, reinforce_w=float(reinforce_w), baseline_decay=float(baseline_decay),
            reinforce_samples=int(reinforce_samples), reinforce_w_under=reinforce_w_under,
            latency_probs=latency_probs, **kwargs)

    def get_compile_config(self):
        """What `compile` was given, optimizers serialised (Keras writes it into `.keras` files)."""
        if not self._compile_args:
            return None
        return dict(self._compile_args, weight_optimizer=keras.optimizers.serialize(self.optimizer),
                    arch_optimizer=keras.optimizers.serialize(self.arch_optimizer))

    def compile_from_config(self, config):
        """Compile again from `get_compile_config` (Keras calls it when loading a `.keras` file, before
        the weights and both optimizers' state are restored)."""
        config = dict(config)
        for key in ("weight_optimizer", "arch_optimizer"):
            config[key] = keras.optimizers.deserialize(config[key])
        self.compile(**config)

    @staticmethod
    def _check_target_value(target_ms):
        if target_ms is None or not math.isfinite(float(target_ms)) or float(target_ms) <= 0:
            raise ConfigError("target_ms", "value", f"needs a positive target latency, got {target_ms!r}",
                              "pass target_ms (the reward's reference latency)")
        return float(target_ms)

    def _check_target(self, target_ms, latency_loss):
        lo, hi = self.latency_table.latency_range(self.latency_space, self.latency_num_classes)
        src = self.latency_table.path or "<latency table>"
        if target_ms is None or not math.isfinite(float(target_ms)) or float(target_ms) <= 0:
            raise ConfigError("target_ms", "value", f"needs a positive target latency, got {target_ms!r}",
                              f"pick a target inside the reachable range [{lo:.4g}, {hi:.4g}] ms of {src}")
        t = float(target_ms)
        if not lo <= t <= hi:
            raise ConfigError("target_ms", "value", f"{t:g} ms is outside the reachable range "
                              f"[{lo:.4g}, {hi:.4g}] ms of this space on {src}",
                              f"pick a target between {lo:.4g} and {hi:.4g} ms")
        if latency_loss == "mul#log" and lo <= 1.0:
            raise ConfigError("latency_loss", "mul#log", f"log-latency ratio is undefined for latencies <= 1 ms "
                              f"(this space reaches {lo:.4g} ms)", "use add#linear, add#abs or add#hinge")
        return t

    def arch_loss(self, ce, expected_ms):
        """CE ⊕ latency term, as in the paper (`mul#log`, `add#linear`) plus `add#abs` and `add#hinge`.

        `add#hinge` exists because the paper's terms price every millisecond, under the target
        too: where CE cannot tell the candidates apart, that steady pull alone decides, and it
        picks the cheapest op per layer."""
        if self.latency_loss is None:
            return ce
        t = self.target_ms
        if self.latency_loss == "mul#log":
            p = self.loss_params
            return p["alpha"] * ce * (keras.ops.log(expected_ms) / math.log(t)) ** p["beta"]
        rel = (expected_ms - t) / t
        if self.latency_loss == "add#abs":
            rel = keras.ops.abs(rel)
        elif self.latency_loss == "add#hinge":
            rel = keras.ops.relu(rel)
        return ce + self.loss_params["lambda"] * rel

    def arch_latency(self, samples):
        """E of the architecture loss for the step's `samples`: over softmax(α), or with
        `latency_probs='pair'` over each layer's sampled pair (mode `two`)."""
        if self.latency_probs == "pair":
            return self.expected_latency(pairs=[pair for pair, _ in samples])
        return self.expected_latency()
