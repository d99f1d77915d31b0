"""A finished search's supernet, rebuilt from its directory, as a predictor of stand-alone accuracy.

The search picks operations by how the shared-weight supernet scores them. Whether that score
ranks architectures the way retraining them does is the question every weight-sharing NAS result
rests on; this module rebuilds the supernet exactly as the search trained it (its `config.json`:
space, data split, weight sharing, the optimizers whose slots the checkpoint holds) and scores
any architecture of the space with the supernet's weights, after re-estimating BN statistics on
that path, as the official code does before validating a sub-network.
"""

import os

from proxyless_tf.search.config import read_config
from proxyless_tf.search.inputs import space_for_data
from proxyless_tf.errors import ConfigError

CHECKPOINT = os.path.join("checkpoints", "last.weights.h5")


def load_search(search_dir, eager=True):
    """(cfg, space, data, net) of the search in `search_dir`, its last good checkpoint loaded.

    `eager`: score paths eagerly. Each architecture is one path through a few dozen batches;
    tracing the supernet's graph again for every path costs minutes of CPU here."""
    import keras
    import tensorflow as tf

    from proxyless_tf.data import datasets as data_lib
    from proxyless_tf.data.image_source import default_cache_dir
    from proxyless_tf.data.sources import open_source
    from proxyless_tf.search.supernet import SuperNet

    cfg = read_config(search_dir)
    ckpt = os.path.join(search_dir, CHECKPOINT)
    if not os.path.exists(ckpt):
        raise ConfigError(ckpt, "checkpoint", "missing: the search wrote no finite epoch",
                          "finish the search (rerun its command: it resumes), or drop this directory")
    if eager:
        tf.config.run_functions_eagerly(True)
    cache_dir = default_cache_dir()
    source = open_source(cfg.dataset, cfg.data_dir, cfg.manual_dir, cache_dir=cache_dir)
    space = space_for_data(cfg, source)
    keras.utils.set_random_seed(cfg.seed)
    data = data_lib.search_data(source, space.input_shape, cfg.batch_size, cfg.valid_size, cfg.valid_batch_size,
                                cfg.seed, max_train=cfg.max_train, label_cache_dir=cache_dir)
    net = SuperNet(space, data.num_classes, None, mode=cfg.mode, seed=cfg.seed, weight_sharing=cfg.weight_sharing,
                   weight_sampling=cfg.weight_sampling, sandwich=cfg.sandwich,
                   distill=cfg.distill, warmup_path=cfg.warmup_path)
    # the optimizers as the search built them, so the checkpoint's optimizer variables match
    net.compile(weight_optimizer=keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(cfg.weight_lr, 1),
                                                      momentum=cfg.weight_momentum, nesterov=True,
                                                      weight_decay=cfg.weight_decay or None),
                arch_optimizer=keras.optimizers.Adam(cfg.arch_lr, beta_1=0.0, beta_2=cfg.arch_beta2),
                latency_loss=None, arch_every=cfg.arch_every, warmup_epochs=cfg.warmup_epochs,
                reinforce_w=cfg.reinforce_w, baseline_decay=cfg.reinforce_baseline_decay)
    net.load_weights(ckpt)
    return cfg, space, data, net


class PathScorer:
    """Validation accuracy of an architecture with the supernet's weights.

    Before each one the checkpoint's BN statistics are restored and the RNG reseeded, so every
    architecture is recalibrated on the same batches from the same starting statistics and the
    order of the calls does not matter."""

    def __init__(self, net, data, recalibration_steps, seed):
        self.net, self.data, self.steps, self.seed = net, data, recalibration_steps, seed
        self.snapshot = [(v, v.numpy()) for v in net.non_trainable_variables]

    def restore(self):
        """The BN statistics as they were before the first score (a search that goes on to
        evaluate its derived network recalibrates from them, not from the last path scored)."""
        for v, value in self.snapshot:
            v.assign(value)

    def __call__(self, arch):
        import keras

        self.restore()
        keras.utils.set_random_seed(self.seed)
        return self.net.evaluate_argmax(self.data.valid, self.data.search, self.steps, arch=arch)
