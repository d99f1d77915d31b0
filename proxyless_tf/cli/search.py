"""`python -m proxyless_tf.search`: ProxylessNAS architecture search from flags.

Thin by design: flags become a `SearchConfig` (`proxyless_tf.search.config`), the library does the rest.
`--flagfile=NAME.flags` works from any directory: a flag file name that is not a path
resolves in the project's configs/ (argv is rewritten before absl reads it), and the
--space / --latency_table values of a flag file may be names that resolve there too.

    python -m proxyless_tf.search --flagfile=quickstart.flags
    python -m proxyless_tf.search --flagfile=mobile.flags --manual_dir=/data/imagenet

Killed (Ctrl-C, SIGKILL, a lost machine), the same command continues from the last
resume checkpoint in OUT_DIR/resume/.
"""

import dataclasses
import os
import sys

from absl import flags

from proxyless_tf import cli

from proxyless_tf.runtime import distribute
from proxyless_tf.errors import ConfigError
from proxyless_tf.search.latency_losses import LATENCY_LOSSES

ROOT = cli.ROOT

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "fashion_mnist", "fashion_mnist (local IDX files first), cifar10, imagenet2012, ...")
flags.DEFINE_string("data_dir", None, "Directory of the IDX files, or the tfds data_dir.")
flags.DEFINE_string("manual_dir", None, "tfds manual download directory (ImageNet tar files).")
flags.DEFINE_integer("valid_size", None, "Images carved (class-balanced) from train for the arch step.")
flags.DEFINE_integer("max_train", None, "Use only this many training images (quick runs).")
flags.DEFINE_string("space", "fashion_mnist.json", "Search space JSON (a bare name resolves in configs/spaces).")
flags.DEFINE_integer("resolution", None, "Override the space's input height/width.")
flags.DEFINE_integer("latency_resolution", None, "Look the latency term up at this input height/width (the "
                     "deployment one the table was measured at) while the network runs at --resolution.")
flags.DEFINE_integer("latency_num_classes", None, "Classifier width of the table's head entry (default: the "
                     "dataset's); e.g. 1000 for a table measured for ImageNet. A constant: moves no choice.")
flags.DEFINE_string("latency_table", None, "LatencyTable JSON ('~' allowed).")
flags.DEFINE_boolean("build_table", False, "Build the table with --table_backend when it does not exist.")
flags.DEFINE_string("table_backend", "litert", "Backend that builds a missing table.")
flags.DEFINE_integer("table_threads", 1, "Threads of the table backend.")
flags.DEFINE_enum("table_clock", None, ["cpu", "wall", "ref"],
                  "litert: clock of a table built now (ref = relative to an interleaved reference network, "
                  "the most repeatable on a busy machine; default: the backend's own).")
flags.DEFINE_float("target_ms", None, "Latency target (ms); must be inside the space's reachable range.")
flags.DEFINE_float("target_frac", None, "Target as a position in the reachable range (0 fastest, 1 slowest), "
                   "used when --target_ms is not given.")
flags.DEFINE_string("latency_loss", "mul#log", f"{', '.join(LATENCY_LOSSES)} or none (what each "
                    "computes: proxyless_tf/latency_losses.py).")
flags.DEFINE_float("loss_alpha", 0.2, "mul#log alpha.")
flags.DEFINE_float("loss_beta", 0.3, "mul#log beta.")
flags.DEFINE_float("loss_lambda", 0.1, "add#linear / add#abs / add#hinge lambda.")
flags.DEFINE_enum("mode", "two", ["two", "full", "full_v2", "reinforce"],
                  "two: ProxylessNAS binary gates; full: DARTS baseline; full_v2: gate gradients of every op "
                  "with one path's memory (recomputed in the backward); reinforce: Proxyless-R (REINFORCE).")
flags.DEFINE_enum("weight_sharing", "independent", ["independent", "nested"],
                  "independent: every candidate op has its own weights (the paper); nested: a layer's MBConv "
                  "candidates are cut from shared kernels (k3 in k5 in k7, e3 in e6; private BN) so the supernet "
                  "learns on a small budget (proxyless_tf/nested.py).")
flags.DEFINE_enum("weight_sampling", "alpha", ["alpha", "uniform"],
                  "Path of each weight step: alpha (the paper: drawn from softmax(alpha)) or uniform (every op "
                  "trained as often, so the supernet does not score alpha's favourites higher for having trained "
                  "them more).")
flags.DEFINE_enum("sandwich", "none", ["none", "largest", "largest_smallest"],
                  "Fixed paths every weight step trains besides the sampled one (BigNAS's sandwich rule): the "
                  "largest network (widest, largest-kernel op everywhere), and with largest_smallest also the "
                  "smallest (skippable layers skipped, narrowest op elsewhere). Each costs one more forward and "
                  "backward per weight step. Also under --strategy; not with --mode=full.")
flags.DEFINE_float("distill", 0.0, "With --sandwich=largest or largest_smallest: weight w of the largest path's "
                   "softmax in the other paths' weight loss, (1 - w) * CE(labels) + w * CE(largest's softmax); "
                   "1 is BigNAS's in-place distillation, 0 (default) trains every path on the labels.")
flags.DEFINE_enum("warmup_path", "sampled", ["sampled", "largest"],
                  "Path of the warm-up epochs' weight steps: sampled (the paper: as after the warm-up) or largest "
                  "(the largest network only, once-for-all's first stage; the sub-networks then start from its "
                  "trained weights). Needs --warmup_epochs >= 1.")
flags.DEFINE_float("reinforce_w", 0.1, "reinforce: w of the reward acc * (target / latency)^w "
                   "(--latency_loss=none: reward = accuracy).")
flags.DEFINE_float("reinforce_baseline_decay", 0.99, "reinforce: decay of the moving-average reward baseline.")
flags.DEFINE_float("reinforce_w_under", None, "reinforce: the reward's exponent for a network at or under the "
                   "target (default: --reinforce_w, a soft constraint on both sides). 0 with --reinforce_w=1 is "
                   "MnasNet's hard constraint: no reward for being faster than the target, about 1 % per 1 % over it.")
flags.DEFINE_integer("reinforce_samples", 10, "reinforce: architectures drawn per update, run on the same validation "
                     "batch, their gradients averaged against the batch's mean reward (the official code's "
                     "rl_batch_size, 10); 1: one draw per update against the moving-average baseline.")
flags.DEFINE_integer("epochs", 1, "Search epochs (warm-up included).")
flags.DEFINE_integer("warmup_epochs", 0, "Weight-only epochs first.")
flags.DEFINE_integer("arch_every", 1, "An architecture step every this many weight steps.")
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: one pass over the train split).")
flags.DEFINE_integer("batch_size", 64, "Training batch size.")
flags.DEFINE_integer("valid_batch_size", None, "Validation batch size (default: batch_size).")
flags.DEFINE_float("weight_lr", 0.025, "Initial weight learning rate (SGD Nesterov, cosine).")
flags.DEFINE_float("weight_momentum", 0.9, "SGD momentum.")
flags.DEFINE_float("weight_decay", 4e-5, "Weight decay.")
flags.DEFINE_float("arch_lr", 1e-3, "Adam learning rate of alpha (beta1 = 0).")
flags.DEFINE_float("arch_beta2", 0.999, "Adam beta2 of alpha.")
flags.DEFINE_integer("bn_recalibration_steps", 20, "Train batches re-estimating BN of the final argmax net.")
flags.DEFINE_float("derive_tolerance", 0.1, "If the argmax net misses target_ms by more than this fraction, "
                   "swap the cheapest layers toward it (0: plain argmax).")
flags.DEFINE_enum("derive_mode", "band", ["band", "ceiling"], "band: derive into target +- tolerance from both "
                  "sides (networks compared at one latency); ceiling: the target is a budget, only a net slower "
                  "than target x (1 + tolerance) is changed.")
flags.DEFINE_boolean("derive_measure", False, "Measure the derived network on the table's device (LiteRT or "
                     "TF tables built on this machine) and, when it misses the band, move the table's target by its "
                     "measured/predicted ratio, or between two networks measured on either side, and derive again (at "
                     "most 5 measurements, until one is within half the band); the target is then on "
                     "the device's clock, not only the table's.")
flags.DEFINE_float("measured_target_ms", None, "--derive_measure: the target on the device's clock when it differs "
                   "from the table's (--target_ms then prices the latency loss, this one is the measured band); "
                   "default: --target_ms.")
flags.DEFINE_string("measured_reference", None, "--derive_measure: an architecture file of the search space "
                    "(e.g. the network whose latency is the target) measured right after every derived network; the "
                    "target on the device is its first measurement, and each derived network's time is rescaled by "
                    "how far the reference moved since then. Why: over an hour one network's measurement drifts by "
                    "several per cent (research/RESULTS.md [retrain6]: the target network +7.4 %), and a network timed "
                    "beside it drifts with it. Instead of --measured_target_ms; without --target_ms or --target_frac "
                    "the latency loss aims at the table's prediction of it.")
flags.DEFINE_integer("derive_samples", 0, "0: derive from the argmax of alpha (the paper). N > 0: draw N networks "
                     "(--derive_proposal) that the table puts in the band, score each with the "
                     "supernet's weights on the validation split (BN re-estimated) and derive from the best "
                     "(SPOS/ENAS-style selection; research/RESULTS.md supernet ranking sections say why).")
flags.DEFINE_enum("derive_proposal", "uniform", ["uniform", "alpha"], "--derive_samples: draw each layer's op "
                  "uniformly or from softmax(alpha).")
flags.DEFINE_string("out_dir", "runs/search", "Run directory.")
flags.DEFINE_integer("seed", 0, "Seed of the split, shuffles and path sampling.")
flags.DEFINE_integer("verbose", 2, "Keras fit verbosity.")
distribute.define_flags(flags)
flags.DEFINE_boolean("deterministic", False, "Bit-for-bit repeatable: seeds everything and enables TF op "
                     "determinism, so a killed and resumed search ends with an uninterrupted run's arch.json and α.")
flags.DEFINE_integer("checkpoint_every", 100, "Write the resume checkpoint every this many steps (and at every "
                     "epoch end); a killed search rerun with the same flags continues from it. 0: epoch ends only.")
flags.DEFINE_float("max_abs_alpha", 50.0, "Stop the search when any |alpha| exceeds this (a diverging "
                   "architecture step); 0: only non-finite alpha stops it.")
flags.DEFINE_boolean("cpu_kernels", True, "On a CPU-only host, fused batch norm and small-map depthwise "
                     "gradients in the supernet (proxyless_tf/cpu_kernels.py): same maths, a smaller traced graph.")
flags.DEFINE_boolean("run_eagerly", False, "Run every step eagerly (no tf.function tracing): on a loaded CPU "
                     "a big space's graph (e.g. the 21-layer mobile space) takes longer to trace than a short "
                     "search takes to run eagerly.")
flags.DEFINE_boolean("graph_optimizer", True, "Run TF's grappler on the search graph: it prunes the "
                     "branches' unused gradients and intermediates, which hold most of the search's memory "
                     "(quickstart-sized run: peak RSS 3.6 GiB with it, 6.0 GiB without; ~35 s longer to start).")


resolve_flagfiles = cli.resolve_flagfiles


def main(argv):
    if len(argv) > 1:
        raise ConfigError("<command line>", "arguments", f"unexpected arguments {argv[1:]}",
                          "pass options as --flag=value")
    from proxyless_tf.search import run as search_run
    from proxyless_tf.search.config import SearchConfig

    names = [f.name for f in dataclasses.fields(SearchConfig)]
    values = {n: getattr(FLAGS, n) for n in names if n in FLAGS}
    values["space"] = cli.resolve_path(FLAGS.space, "spaces")
    table = FLAGS.latency_table
    if table and not table.startswith("~") and not os.path.isabs(table) and not os.path.exists(table):
        if os.path.exists(os.path.join(ROOT, table)):  # flag files name paths from the repo root
            table = os.path.join(ROOT, table)
    values["latency_table"] = table
    cfg = SearchConfig(**values)
    search_run.check_config(cfg)  # bad files and flags fail here, before TensorFlow takes seconds to load
    import tensorflow as tf

    if not FLAGS.graph_optimizer:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    if FLAGS.run_eagerly:
        tf.config.run_functions_eagerly(True)
    search_run.run_search(cfg)


def entry():
    cli.run(main, argv=resolve_flagfiles(sys.argv))


if __name__ == "__main__":
    entry()
