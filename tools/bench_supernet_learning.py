"""How fast a supernet learns under uniform single-path training, per weight-sharing scheme.

    python tools/bench_supernet_learning.py [--steps=150 --batch=64 --lr=0.05]

The ProxylessNAS weight step trains one path sampled per layer. With independent
candidates (the paper) every op of a 7-way layer gets about a seventh of the steps and the
path changes every step; with `--weight_sharing=nested` the MBConv candidates share
kernels (`proxyless_tf/layers/nested.py`). This runs, on real Fashion-MNIST, the supernet's own
weight step (`SuperNet._forward` + `_apply_weight_step`, eager, one thread) for:

  fixed        one path every step (every layer mb_k3_e6): the plain-training reference
  independent  a uniform random path per step, independent candidates
  nested       a uniform random path per step, nested weight sharing

from the same seed and batches, and prints the training accuracy over windows of steps
and each scheme's last-window accuracy as a fraction of the fixed path's. Uniform paths
(α = 0) are what a search's warm-up epochs train.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from proxyless_tf import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 150, "Weight steps per scheme.")
flags.DEFINE_integer("window", 50, "Report the mean training accuracy over windows of this many steps.")
flags.DEFINE_integer("batch", 64, "Batch size.")
flags.DEFINE_float("lr", 0.05, "SGD (Nesterov, momentum 0.9) learning rate.")
flags.DEFINE_string("space", "fashion_mnist.json", "Search space (a name resolves in configs/spaces).")
flags.DEFINE_list("schemes", ["fixed", "independent", "nested"], "Which schemes to run.")
flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX directory (default: the Debian package's).")
flags.DEFINE_integer("seed", 0, "Seed of the weights, the paths and the batches.")


def run_scheme(scheme, x, y, space, steps, batch, lr, seed):
    """Per-step training accuracy of one scheme."""
    import keras
    import numpy as np
    import tensorflow as tf

    from proxyless_tf.search.supernet import SuperNet

    keras.utils.set_random_seed(seed)
    net = SuperNet(space, 10, None, seed=seed, weight_sharing="nested" if scheme == "nested" else "independent")
    net.compile(keras.optimizers.SGD(lr, momentum=0.9, nesterov=True), latency_loss=None)
    rng = np.random.default_rng(seed)
    fixed = [m.candidates.index("mb_k3_e6") for m in net.mixed_ops]
    accs = []
    for _ in range(steps):
        idx = rng.integers(0, len(x), batch)
        xb, yb = tf.constant(x[idx]), tf.constant(y[idx])
        path = fixed if scheme == "fixed" else [int(rng.integers(m.num_candidates)) for m in net.mixed_ops]
        samples = [tf.constant(j, tf.int32) for j in path]
        wvars = net.weight_variables
        with tf.GradientTape() as tape:
            logits = net._forward(xb, True, "single", samples)
            ce = net._ce(yb, logits)
        net._apply_weight_step(tape.gradient(ce, wvars), wvars, samples)
        accs.append(float(np.mean(np.argmax(logits.numpy(), 1) == y[idx])))
    return accs


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf

    from proxyless_tf.data import idx as data
    from proxyless_tf.data.normalization import NORMALIZATION
    from proxyless_tf.errors import ConfigError
    from proxyless_tf.space import SearchSpace

    tf.config.threading.set_intra_op_parallelism_threads(1)
    path = FLAGS.space
    if not os.path.exists(path):
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "spaces", path)
    space = SearchSpace.from_json(path)
    data.check_data_dir(FLAGS.data_dir)
    directory = data.find_fashion_dir(FLAGS.data_dir)
    if directory is None:
        raise ConfigError(FLAGS.data_dir or "/usr/share/datasets/fashion-mnist", "--data_dir",
                          "no Fashion-MNIST IDX files there", "apt-get install -y dataset-fashion-mnist")
    images, labels = data.load_fashion_local(directory)
    mean, std = NORMALIZATION["fashion_mnist"]
    x = ((images.astype(np.float32) / 255.0) - np.float32(mean[0])) / np.float32(std[0])
    y = labels.astype(np.int32)
    results = {}
    for scheme in FLAGS.schemes:
        t0 = time.time()
        accs = run_scheme(scheme, x, y, space, FLAGS.steps, FLAGS.batch, FLAGS.lr, FLAGS.seed)
        wins = [float(np.mean(accs[i:i + FLAGS.window])) for i in range(0, len(accs), FLAGS.window)]
        results[scheme] = wins
        print(f"{scheme:12s} train accuracy per {FLAGS.window} steps: "
              + " ".join(f"{w * 100:5.1f}%" for w in wins) + f"   ({time.time() - t0:.0f} s)", flush=True)
    if "fixed" in results:
        ref = results["fixed"][-1]
        for scheme, wins in results.items():
            if scheme != "fixed":
                print(f"{scheme:12s} last window / fixed path: {wins[-1] / ref:.2f}")


if __name__ == "__main__":
    cli.run(main)
