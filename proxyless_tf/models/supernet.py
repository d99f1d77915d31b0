"""`SuperNetBase`: the over-parameterised network, its forward passes and its latency pricing.

Every candidate of every searchable layer (`MixedOp`, with its architecture logits α) between
the fixed stem, first block and head of a `SearchSpace`. This module holds what a trained
supernet is without any search machinery: the structure, the forward of a path (one op per
layer, sampled, the argmax, or the softmax-weighted sum), the table's expected and argmax
latency, the α summaries, the evaluation of a path with the shared weights, and `get_config`.
The steps that search it (weight and architecture steps, REINFORCE, compile, derivation) are
in `proxyless_tf.search`; `proxyless_tf.SuperNet` is that search model.
"""

import keras
import numpy as np
import tensorflow as tf

from proxyless_tf import space as space_lib
from proxyless_tf.errors import ConfigError
from proxyless_tf.layers import blocks
from proxyless_tf.layers.mixed_op import MixedOp
from proxyless_tf.layers.nested import WEIGHT_SHARING


class SuperNetBase(keras.Model):
    """Every candidate of every searchable layer, with architecture logits, as one Keras model.

    Args:
        space: a `SearchSpace` (or its dict).
        num_classes: classifier width.
        latency_table: a `LatencyTable` covering every block of `latency_space` (None: no pricing).
        seed: seed of the path sampling (layer i uses seed + i); None: random.
        latency_space: the space the latency term is looked up in (None: `space`). A search at
            a proxy resolution passes the same space at the deployment resolution here: the
            network runs at `space`'s input size, while `expected_latency`, `argmax_latency`,
            the target's range and the latency-aware derivation use the table's keys at
            `latency_space`'s. Both must have the same searchable layers and candidates.
        latency_num_classes: classifier width of the table's head entry (None: `num_classes`);
            the head is a constant of every architecture, so this moves no choice, only the
            absolute milliseconds (e.g. a table measured for 1000 classes, searched on 10).
        weight_sharing: `independent` (the paper) or `nested` (MBConv candidates of a layer
            cut from shared kernels, `nested.py`: the supernet learns within a small budget).
    """

    def __init__(self, space, num_classes, latency_table=None, seed=None, latency_space=None,
                 latency_num_classes=None, weight_sharing="independent", **kwargs):
        kwargs.setdefault("name", "supernet")
        super().__init__(**kwargs)
        if isinstance(space, dict):
            space = space_lib.SearchSpace.from_dict(space)
        self.space = space
        self.num_classes = int(num_classes)
        self.seed = seed
        if weight_sharing not in WEIGHT_SHARING:
            raise ConfigError("<supernet>", "weight_sharing", f"unknown weight sharing {weight_sharing!r}",
                              f"use one of {WEIGHT_SHARING}")
        self.weight_sharing = weight_sharing
        self.latency_table = latency_table
        if isinstance(latency_space, dict):
            latency_space = space_lib.SearchSpace.from_dict(latency_space)
        self.latency_space = latency_space if latency_space is not None else space
        if [l.candidates for l in self.latency_space.layers] != [l.candidates for l in space.layers]:
            raise ConfigError("<supernet>", "latency_space",
                              f"space {self.latency_space.name!r} does not have the searchable layers and candidates "
                              f"of {space.name!r}", "pass the same space at another resolution")
        self.latency_num_classes = int(latency_num_classes) if latency_num_classes else self.num_classes
        if latency_table is not None:
            latency_table.check_space(self.latency_space, self.latency_num_classes)
        st, fb = space.stem, space.first_block
        self.stem_layers = blocks.conv_bn_act_layers(keras, st["out_channels"], st["kernel"], st["stride"],
                                                     space.bn_eps, "stem")
        fbs = space_lib.parse_op(fb["op"])
        self.block0 = blocks.MBConv(st["out_channels"], fb["out_channels"], fbs.kernel, fbs.expand, 1,
                                    space.bn_eps, residual=st["out_channels"] == fb["out_channels"],
                                    name="block0")
        self.mixed_ops = [
            MixedOp.from_layer_spec(l, space.bn_eps, mode="single",
                                    seed=None if seed is None else int(seed) + l.index, name=f"layer{l.index}",
                                    weight_sharing=weight_sharing)
            for l in space.layers]
        self.head_layers = blocks.conv_bn_act_layers(keras, space.head["out_channels"], 1, 1, space.bn_eps, "head")
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.classifier = keras.layers.Dense(self.num_classes, name="classifier")
        self._path_fns = None  # traced on first use (`_path_functions`)
        # not built here: a subclass adds its own state first (Keras refuses new variables on a
        # built model), then calls `self.build((None,) + space.input_shape)`; else the first call builds

    # ---- structure --------------------------------------------------------------------------
    def build(self, input_shape):
        if self.built:
            return
        # One forward of every op (batch 1, inference) creates every variable before compile.
        self._forward(keras.ops.zeros((1,) + tuple(input_shape[1:])), False, "full")
        self.built = True

    def _forward(self, x, training, mode, samples=None):
        """The network with every layer in `MixedOp` mode `mode`; `samples`: per layer what `sample` drew."""
        x = blocks.apply_layers(self.stem_layers, x, training)
        x = self.block0(x, training=training)
        for i, m in enumerate(self.mixed_ops):
            x = m(x, training=training, mode=mode, sample=None if samples is None else samples[i])
        x = blocks.apply_layers(self.head_layers, x, training)
        return self.classifier(self.pool(x))

    def call(self, inputs, training=None):
        """The current argmax network (what `predict` and `evaluate` see)."""
        return self._forward(inputs, training, "argmax")

    @property
    def arch_variables(self):
        return [m.alpha for m in self.mixed_ops]

    @property
    def weight_variables(self):
        arch = {id(v) for v in self.arch_variables}
        return [v for v in self.trainable_variables if id(v) not in arch]

    # ---- latency ----------------------------------------------------------------------------
    def expected_latency(self, pairs=None):
        """E[latency] under softmax(α), calibrated; differentiable in α. 0 without a table.

        `pairs` (mode `two`, per layer the two sampled op indices): the official code's
        variant, each layer's probabilities renormalised over its sampled pair (softmax of the
        pair's α, 0 elsewhere), so only the pair's α get a latency gradient."""
        if self.latency_table is None:
            return keras.ops.zeros(())
        total = keras.ops.convert_to_tensor(self._fixed_cost, "float32")
        for i, (m, cost) in enumerate(zip(self.mixed_ops, self._costs)):
            if pairs is None:
                total = total + keras.ops.sum(keras.ops.softmax(m.alpha) * cost)
            else:
                p = keras.ops.softmax(keras.ops.take(m.alpha, pairs[i]))
                total = total + keras.ops.sum(p * keras.ops.take(keras.ops.cast(cost, "float32"), pairs[i]))
        return total

    def argmax_latency(self):
        if self.latency_table is None:
            return keras.ops.zeros(())
        total = keras.ops.convert_to_tensor(self._fixed_cost, "float32")
        for m, cost in zip(self.mixed_ops, self._costs):
            total = total + keras.ops.take(cost, keras.ops.argmax(m.alpha))
        return total

    @property
    def _costs(self):
        """Calibrated per-candidate costs (per-block term included): the numbers `predict` adds up.

        Read from the table on use, so a calibration refitted after the net was built counts.
        """
        return self.latency_table.layer_costs(self.latency_space)

    @property
    def _fixed_cost(self):
        return self.latency_table.fixed_cost(self.latency_space, self.latency_num_classes)

    def latency_arch(self, arch):
        """`arch` (of `space`) as an `Arch` of `latency_space`: what the table predicts."""
        return space_lib.Arch(self.latency_space, list(arch.ops))

    def predicted_ms_of(self, indices):
        """The table's prediction (what `LatencyTable.predict` reports) of many networks at once:
        `indices` is (networks, layers) of op indices; returns one float per network."""
        indices = np.asarray(indices)
        return self._fixed_cost + sum(np.asarray(c, np.float64)[indices[:, l]] for l, c in enumerate(self._costs))

    # ---- α summaries ------------------------------------------------------------------------
    def mean_entropy(self):
        ent = [-keras.ops.sum(keras.ops.softmax(m.alpha) * keras.ops.log_softmax(m.alpha)) for m in self.mixed_ops]
        return keras.ops.mean(keras.ops.stack(ent))

    def alpha_logp(self):
        """Per layer, log softmax(α) as float64 numpy: what the derivations rank ops by."""
        return [keras.ops.convert_to_numpy(keras.ops.log_softmax(m.alpha)).astype(np.float64)
                for m in self.mixed_ops]

    def alpha_probs(self):
        """Per layer, {op: probability}: what the α history records."""
        out = []
        for m in self.mixed_ops:
            p = keras.ops.convert_to_numpy(keras.ops.softmax(m.alpha))
            out.append({op: round(float(v), 6) for op, v in zip(m.candidates, p)})
        return out

    def arch_of(self, indices):
        """The `Arch` of `space` with op `indices[l]` in searchable layer l."""
        return space_lib.Arch(self.space, [m.candidates[int(i)] for m, i in zip(self.mixed_ops, indices)])

    # ---- evaluating a path with the shared weights ------------------------------------------
    def _path_functions(self):
        """(BN re-estimation forward, inference forward) of one path given as an int32 vector of op
        indices, traced once: scoring many networks (`sampled_derivation`, `path_scorer`) would
        otherwise retrace the whole supernet for each one."""
        if self._path_fns is None:
            def fn(training):
                return tf.function(lambda x, s: self._forward(x, training, "single",
                                                              tf.unstack(s, num=len(self.mixed_ops))))

            self._path_fns = (fn(True), fn(False))
        return self._path_fns

    def evaluate_argmax(self, valid_ds, train_ds=None, recalibration_steps=0, arch=None):
        """Accuracy of the argmax network (or of `arch`, with the supernet's weights) on (x, y) batches.

        Its BN statistics are first re-estimated on `recalibration_steps` training batches
        (inference forwards in training mode, no weight update): the moving averages of the
        shared supernet mix every path that ran, as the official code's reset of running
        statistics before validation acknowledges.
        """
        if arch is None:
            recal = tf.function(lambda x: self._forward(x, True, "argmax"))
            infer = tf.function(lambda x: self._forward(x, False, "argmax"))
        else:
            path = tf.constant([m.candidates.index(op) for m, op in zip(self.mixed_ops, arch.ops)], tf.int32)
            recal_path, infer_path = self._path_functions()
            recal, infer = (lambda x: recal_path(x, path)), (lambda x: infer_path(x, path))
        if train_ds is not None and recalibration_steps:
            for batch in train_ds.take(recalibration_steps):
                recal(batch[0][0] if isinstance(batch[0], tuple) else batch[0])
        acc = keras.metrics.SparseCategoricalAccuracy()
        for x, y in valid_ds:
            acc.update_state(y, infer(x))
        return float(acc.result())

    # ---- serialisation ----------------------------------------------------------------------
    def get_config(self):
        """The constructor's arguments; defaults stay implicit. The latency table by value (a small
        JSON object), so a `.keras` file reloads with the pricing it was searched with."""
        config = {"space": self.space.to_dict(), "num_classes": self.num_classes, "seed": self.seed,
                  "name": self.name}
        if self.latency_table is not None:
            config["latency_table"] = self.latency_table.to_dict()
        if self.latency_space is not self.space:
            config["latency_space"] = self.latency_space.to_dict()
        if self.latency_num_classes != self.num_classes:
            config["latency_num_classes"] = self.latency_num_classes
        if self.weight_sharing != "independent":
            config["weight_sharing"] = self.weight_sharing
        return config
