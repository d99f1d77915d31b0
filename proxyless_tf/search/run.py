"""One architecture search, start to finish, as a library call (the CLI only maps flags here).

`run_search(SearchConfig(...))`: load the space, the latency table (building and caching it
when asked), the data; check the target against the reachable range; fit the supernet with
Keras callbacks (TensorBoard, per-epoch α history, a checkpoint that is only written while
the numbers are finite, a guard that stops at NaN/inf or a diverging α, and a resume
checkpoint every `checkpoint_every` steps); derive the architecture and write the run
directory: arch.json, alpha_history.json, tensorboard/, checkpoints/, summary.txt.

Killed and started again with the same configuration, a search continues from its last
resume checkpoint (`resume.py`: weights, α, both optimizers, the sampling generators, the
metrics, the step counters, the α history) on the same data order, so with
`deterministic=True` it ends with the arch.json and α of an uninterrupted run.
"""

import math
import os
import time

import numpy as np

from proxyless_tf import files as files_lib
from proxyless_tf import space as space_lib
from proxyless_tf.errors import ConfigError
from proxyless_tf.search.config import write_config
from proxyless_tf.search.latency_losses import LATENCY_LOSSES

WATCHED = ("loss", "arch_loss", "expected_ms")


# ---- callbacks ---------------------------------------------------------------------------------------
def _finite(logs, names=WATCHED):
    for n in names:
        if n in (logs or {}):
            v = float(np.asarray(logs[n]))
            if not math.isfinite(v):
                return n, v
    return None


def alpha_divergence(model, bound):
    """None, or (layer name, max |α|) of the first layer whose α is non-finite or beyond `bound`.

    α of a healthy search stays within a few units (Adam moves it by about arch_lr a step);
    |α| in the tens means the architecture step is running away, and soon exp(α) overflows.
    """
    for m in model.mixed_ops:
        a = np.abs(np.asarray(m.alpha.numpy(), np.float64))
        worst = float(np.max(a))
        if not np.all(np.isfinite(a)) or (bound and worst > bound):
            return m.name, worst
    return None


def make_callbacks(out_dir, alpha_history, max_abs_alpha=50.0):
    import keras

    class NaNGuard(keras.callbacks.Callback):
        """Stops at the first non-finite loss or diverging α; the checkpoints then refuse to save.

        `bad` is (epoch, step, what, detail); `offset(epoch)` (set by the resume callback)
        gives the batches of a resumed epoch that ran before this process.
        """

        def __init__(self):
            super().__init__()
            self.bad = None
            self.epoch = 0
            self.offset = lambda epoch: 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.bad is not None:
                return
            step = batch + 1 + self.offset(self.epoch)
            bad = _finite(logs)
            if bad:
                self.bad = (self.epoch + 1, step, bad[0], "became NaN/inf")
            else:
                div = alpha_divergence(self.model, max_abs_alpha)
                if div:
                    self.bad = (self.epoch + 1, step, "alpha",
                                f"diverged (max |alpha| {div[1]:.4g} in {div[0]}, bound {max_abs_alpha:g})")
            if self.bad:
                self.model.stop_training = True

    guard = NaNGuard()

    class GoodCheckpoint(keras.callbacks.Callback):
        """Weights, both optimizers and α to checkpoints/last.weights.h5, atomically, while finite."""

        def __init__(self):
            super().__init__()
            self.path = os.path.join(out_dir, "checkpoints", "last.weights.h5")
            self.saved_epoch = None

        def on_epoch_end(self, epoch, logs=None):
            if guard.bad or _finite(logs):
                return
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = self.path.replace("last.weights.h5", "tmp.weights.h5")
            self.model.save_weights(tmp, overwrite=True)
            os.replace(tmp, self.path)
            self.model.derive_arch().to_json(os.path.join(out_dir, "checkpoints", "arch_last.json"))
            self.saved_epoch = epoch + 1

    class AlphaHistory(keras.callbacks.Callback):
        """Per epoch: α probabilities of every layer, the argmax ops and the epoch's metrics."""

        def on_epoch_end(self, epoch, logs=None):
            alpha_history.append({
                "epoch": epoch + 1,
                "metrics": {k: float(np.asarray(v)) for k, v in (logs or {}).items()},
                "argmax": self.model.derive_arch().ops,
                "probs": self.model.alpha_probs(),
            })
            files_lib.write_json_atomic(os.path.join(out_dir, "alpha_history.json"), alpha_history)

    return guard, GoodCheckpoint(), AlphaHistory()


# ---- pieces ------------------------------------------------------------------------------------------
def load_space(path, resolution=None):
    space = space_lib.SearchSpace.from_json(path)
    if resolution:
        d = space.to_dict()
        d["input_shape"] = [int(resolution), int(resolution), d["input_shape"][2]]
        space = space_lib.SearchSpace.from_dict(d, source=f"{path} at resolution {resolution}")
    return space


def latency_space(cfg, space):
    """The space the latency term is looked up in: `space`, or the same space at `--latency_resolution`.

    A search at a proxy resolution (`--resolution`, cheap) for a device whose table was
    measured at the deployment resolution runs the network at the proxy size and prices it
    at the deployment size: the searchable layers and candidates are the same, only the
    table keys (input shapes) differ.
    """
    if not cfg.latency_resolution:
        return space
    return load_space(cfg.space, cfg.latency_resolution)


def latency_classes(cfg, num_classes):
    """Classifier width of the table's head entry: `--latency_num_classes`, else the data's."""
    return cfg.latency_num_classes or num_classes


def check_table_covers(cfg, table, lat_space, num_classes=None):
    """`table.check_space`, with the fix naming --latency_resolution when that flag chose the space."""
    try:
        table.check_space(lat_space, num_classes)
    except ConfigError as e:
        if e.field == "num_classes":
            raise ConfigError(e.source, "--latency_num_classes", e.problem,
                              f"pass --latency_num_classes={table.num_classes} to price the head as the table "
                              "measured it (a constant of every architecture), or rebuild the table") from None
        if not cfg.latency_resolution:
            raise
        raise ConfigError(e.source, "--latency_resolution",
                          f"the table does not cover space {lat_space.name!r} at {cfg.latency_resolution}x"
                          f"{cfg.latency_resolution} ({e.field}: {e.problem})",
                          "pass the resolution the table was measured at (its stem key names it), "
                          "or build a table at this resolution") from None


def load_table(cfg, space, num_classes):
    from proxyless_tf.latency.table import LatencyTable

    path = cfg.latency_table
    if not path:
        raise ConfigError("<flags>", "latency_table", "no latency table given", "pass --latency_table=PATH.json")
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        if not cfg.build_table:
            raise ConfigError(path, "<file>", "latency table does not exist",
                              "build it with tools/build_latency_table.py, or pass --build_table to build it now")
        from proxyless_tf.latency import backends, builder

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        t0 = time.time()
        table = builder.build_table(space, backends.make_backend(cfg.table_backend, threads=cfg.table_threads,
                                                                   clock=cfg.table_clock),
                                    path, num_classes, progress=cfg.verbose > 0)
        print(f"latency table ready in {time.time() - t0:.0f} s: {path}", flush=True)
    else:
        table = LatencyTable.load(path)
    check_table_covers(cfg, table, space, num_classes)
    return table


def resolve_target(cfg, table, space, num_classes):
    lo, hi = table.latency_range(space, num_classes)
    if cfg.target_ms is not None:
        return float(cfg.target_ms), (lo, hi)
    if cfg.target_frac is None and cfg.measured_reference:  # "as fast as this network", on the table's clock
        return table.predict(reference_arch(cfg, space), num_classes), (lo, hi)
    if cfg.target_frac is None:
        raise ConfigError("<flags>", "target_ms", "no latency target",
                          f"pass --target_ms (reachable: {lo:.4g} to {hi:.4g} ms) or --target_frac in [0, 1]")
    if not 0.0 <= cfg.target_frac <= 1.0:
        raise ConfigError("<flags>", "target_frac", f"{cfg.target_frac} is not in [0, 1]",
                          "0 is the fastest architecture of the space, 1 the slowest")
    return lo + cfg.target_frac * (hi - lo), (lo, hi)


def reference_arch(cfg, space):
    """--measured_reference as an Arch of `space`, refused (one line) unless its network has the search
    space's layers and candidates; its input size may differ (it is timed at the latency space's, as
    every derived network is), so the tool's `archs/*.json` serve a search at another --resolution."""
    path = os.path.expanduser(cfg.measured_reference)
    arch = space_lib.Arch.from_json(path)
    mine, theirs = space.to_dict(), arch.space.to_dict()
    differ = sorted(k for k in set(mine) | set(theirs)
                    if k not in ("name", "input_shape") and mine.get(k) != theirs.get(k))
    if differ:
        raise ConfigError(path, f"space.{differ[0]}", f"differs from the search space {space.name!r}'s "
                          f"({', '.join(differ)})", "pass an architecture of --space (e.g. written by a search or "
                          "research/tools/experiment_*)")
    return space_lib.Arch(space, arch.ops, source=path)


def derive_on_device(net, table, backend, num_classes, target, cfg, pick=None):
    """`--derive_measure`: the table-based derivation, corrected by measuring the derived networks.

    Returns (arch, (measured_ms, rounds, the target on the device's clock)); each measurement
    is printed as it is made. `pick`: table_target, tolerance -> arch, the derivation of each round
    instead of the argmax's table edits (`--derive_samples`: the supernet's best of the networks
    drawn in that round's band, so a correction redraws in the corrected band rather than editing
    the scored network; its first measurement in `[sampled]` was +15.6 % off, which edits would
    have fixed by α's choices). With `--measured_reference` the target is that network's first
    time, and each derived network's time is scaled by first/now of the reference timed right after
    it (rounds keep both raw times): the band test is then the ratio of two networks timed
    together, whatever the first time's own noise.
    """
    from absl import logging

    from proxyless_tf.models import nets
    from proxyless_tf.latency.measured_derivation import derive_measured

    logging.set_verbosity(logging.WARNING)  # each conversion's INFO page would bury the rounds' lines
    ceiling = cfg.derive_mode == "ceiling"
    on_device = cfg.measured_target_ms or target

    def derive(table_target, tolerance):
        arch = (pick(table_target, tolerance) if pick is not None else
                net.derive_arch(target_ms=table_target, tolerance=tolerance, ceiling=ceiling))
        predicted[tuple(arch.ops)] = table.predict(net.latency_arch(arch), num_classes)
        return arch, predicted[tuple(arch.ops)]

    def time_ms(arch):
        return float(getattr(backend.measure(nets.build_model(net.latency_arch(arch), num_classes)),
                             table.statistic))

    reference, raw, predicted = None, {}, {}
    if cfg.measured_reference:
        reference = reference_arch(cfg, net.space)
        on_device = time_ms(reference)
        print(f"derive_measure: reference {cfg.measured_reference} measured {on_device:.4g} ms (the target)",
              flush=True)

    def measure(arch):
        ms = seen = time_ms(arch)
        line = f"measured {seen:.4g} ms"
        if reference is not None:  # right after: what moved the reference since its first time moved this one
            now = time_ms(reference)
            raw[tuple(arch.ops)] = {"raw_ms": seen, "reference_ms": now}
            ms = seen * on_device / now
            line += f", reference {now:.4g} ms: {ms:.4g} ms on the target's clock"
        print(f"derive_measure: {line} ({(ms - on_device) / on_device * 100:+.1f}% vs target "
              f"{on_device:.4g} ms; table predicts {predicted[tuple(arch.ops)]:.4g})",
              flush=True)
        return ms

    arch, ms, rounds = derive_measured(derive, measure, on_device, cfg.derive_tolerance, ceiling,
                                       table_target_ms=target)
    for r in rounds:
        r.update(raw.get(tuple(r["ops"]), {}))
    return arch, (ms, rounds, on_device)


def summary_text(cfg, space, table, target, rng, arch, pred, valid_acc, history, wall_s, ckpt, argmax_pred,
                 changes, measured=None, sampled=None):
    err = (pred - target) / target * 100
    last = history[-1]["metrics"] if history else {}
    lines = [
        f"ProxylessNAS search: {cfg.dataset} on space {space.name} ({space.num_layers} searchable layers, "
        f"{space.num_architectures():.3g} architectures), mode {cfg.mode}, weights {cfg.weight_sharing}"
        + (", weight paths uniform" if cfg.weight_sampling == "uniform" else "")
        + (f", sandwich {cfg.sandwich}" if cfg.sandwich != "none" else "")
        + (f", distilled {cfg.distill:g}" if cfg.distill else "")
        + (f", warm-up on the {cfg.warmup_path} path" if cfg.warmup_path != "sampled" else ""),
        f"latency table   {table.path} ({table.device.get('backend')}, {len(table)} blocks)"
        + (f"; priced at {cfg.latency_resolution}x{cfg.latency_resolution} input (network runs at "
           f"{space.input_shape[0]}x{space.input_shape[1]})" if cfg.latency_resolution else ""),
        f"reachable range {rng[0]:.4g} .. {rng[1]:.4g} ms; target {target:.4g} ms; "
        + (f"reward acc*(T/lat)^{cfg.reinforce_w:g}"
           + (f" over T, ^{cfg.reinforce_w_under:g} under" if cfg.reinforce_w_under is not None else "")
           + f", {cfg.reinforce_samples} arch(s) per update"
           if cfg.mode == "reinforce" else f"loss {cfg.latency_loss}"),
        f"argmax arch     predicted {argmax_pred:.4g} ms ({(argmax_pred - target) / target * 100:+.1f}% vs target)",
        f"derived arch    predicted {pred:.4g} ms ({err:+.1f}% vs target; latency-aware derivation "
        f"({cfg.derive_mode}) changed {changes} layer(s)"
        + (f" of the argmax; picked by the supernet's score among {len(sampled)} {cfg.derive_proposal} draws in the "
           f"band, {sampled[0]['score'] * 100:.2f}% .. {sampled[-1]['score'] * 100:.2f}%)" if sampled else ")"),
    ]
    if measured is not None:
        ms, rounds, on_device = measured
        lines.append(f"measured        {ms:.4g} ms on {table.device.get('backend')} ({(ms - on_device) / on_device * 100:+.1f}% "
                     f"vs target {on_device:.4g} ms on the device; {len({tuple(r['ops']) for r in rounds})} network(s) "
                     f"measured in {len(rounds)} round(s) of --derive_measure"
                     + (f"; the target is {cfg.measured_reference}, timed after each" if cfg.measured_reference else "")
                     + ")")
    lines += [
        f"valid accuracy  {valid_acc * 100:.2f}% (derived net, supernet weights, BN recalibrated, "
        "validation split carved from train)",
        f"last epoch      " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(last.items())),
        f"epochs {cfg.epochs} (warm-up {cfg.warmup_epochs}), arch step every {cfg.arch_every}, "
        f"batch {cfg.batch_size}; wall time {wall_s / 60:.1f} min",
        "ops: " + " ".join(arch.ops),
        f"run dir {cfg.out_dir}: arch.json, alpha_history.json, tensorboard/, checkpoints/ "
        f"(last good: epoch {ckpt})",
    ]
    return "\n".join(lines)


def check_config(cfg):
    """Every check that needs neither TensorFlow nor the data, so a typo fails in a second.

    Returns the space. Called by the CLI before TensorFlow is imported and again by
    `run_search`; nothing is written before it passes.
    """
    space = load_space(cfg.space, cfg.resolution)
    if cfg.latency_loss not in (None, "none") + LATENCY_LOSSES:
        raise ConfigError("<flags>", "latency_loss", f"unknown latency loss {cfg.latency_loss!r}",
                          f"use {', '.join(LATENCY_LOSSES)} or none")
    if cfg.epochs < 1 or cfg.warmup_epochs < 0 or cfg.warmup_epochs >= cfg.epochs:
        raise ConfigError("<flags>", "epochs", f"epochs={cfg.epochs}, warmup_epochs={cfg.warmup_epochs}",
                          "use epochs >= 1 and 0 <= warmup_epochs < epochs")
    for name in ("batch_size", "valid_batch_size", "valid_size", "max_train", "steps_per_epoch", "arch_every",
                 "latency_resolution", "latency_num_classes", "reinforce_samples"):
        v = getattr(cfg, name)
        if v is not None and v < 1:
            raise ConfigError("<flags>", f"--{name}", f"must be at least 1, got {v}", f"pass a positive --{name}")
    if cfg.sandwich != "none" and cfg.mode == "full":  # full already trains every op every step
        raise ConfigError("<flags>", "--sandwich", f"{cfg.sandwich!r} adds nothing to --mode=full, which trains "
                          "every op every step", "use it with --mode=two (or full_v2, reinforce), or pass --sandwich=none")
    if cfg.reinforce_w_under is not None and cfg.reinforce_w_under < 0:
        raise ConfigError("<flags>", "--reinforce_w_under", f"{cfg.reinforce_w_under} would reward a slower network "
                          "under the target", "pass 0 (MnasNet's hard constraint) or a positive exponent")
    if not 0.0 <= cfg.distill <= 1.0:
        raise ConfigError("<flags>", "--distill", f"{cfg.distill} is not in [0, 1]",
                          "pass a weight from 0 (labels only) to 1 (BigNAS: the largest's softmax only)")
    if cfg.distill and not cfg.sandwich.startswith("largest"):
        raise ConfigError("<flags>", "--distill", f"needs the largest path as the teacher, but --sandwich={cfg.sandwich}",
                          "add --sandwich=largest_smallest (or largest), or drop --distill")
    if cfg.warmup_path != "sampled" and (cfg.mode == "full" or not cfg.warmup_epochs):
        raise ConfigError("<flags>", "--warmup_path", f"{cfg.warmup_path!r} needs warm-up epochs with one path per "
                          f"weight step, but --warmup_epochs={cfg.warmup_epochs} --mode={cfg.mode}",
                          "pass --warmup_epochs=1 or more and a --mode other than full, or drop --warmup_path")
    if cfg.bn_recalibration_steps < 0:
        raise ConfigError("<flags>", "--bn_recalibration_steps", f"must be >= 0, got {cfg.bn_recalibration_steps}",
                          "pass 0 or more")
    for name in ("weight_lr", "arch_lr", "weight_momentum", "weight_decay", "arch_beta2", "loss_alpha",
                 "loss_beta", "loss_lambda", "derive_tolerance", "target_ms", "target_frac", "measured_target_ms"):
        v = getattr(cfg, name)
        if v is not None and (not math.isfinite(v) or v < 0):
            raise ConfigError("<flags>", f"--{name}", f"must be a finite number >= 0, got {v}",
                              f"pass a valid --{name}")
    for name in ("target_ms", "measured_target_ms"):
        if getattr(cfg, name) is not None and getattr(cfg, name) <= 0:
            raise ConfigError("<flags>", f"--{name}", f"must be positive, got {getattr(cfg, name)}",
                              "pass a latency in milliseconds" + (", or --target_frac" if name == "target_ms" else ""))
    if cfg.target_ms is None and cfg.target_frac is not None and not 0.0 <= cfg.target_frac <= 1.0:
        raise ConfigError("<flags>", "target_frac", f"{cfg.target_frac} is not in [0, 1]",
                          "0 is the fastest architecture of the space, 1 the slowest")
    if cfg.measured_target_ms is not None and not cfg.derive_measure:
        raise ConfigError("<flags>", "--measured_target_ms", "is the band of --derive_measure, which is off",
                          "pass --derive_measure too, or drop --measured_target_ms")
    if cfg.measured_reference is not None:
        if not cfg.derive_measure:
            raise ConfigError("<flags>", "--measured_reference", "is measured by --derive_measure, which is off",
                              "pass --derive_measure too, or drop --measured_reference")
        if cfg.measured_target_ms is not None:
            raise ConfigError("<flags>", "--measured_reference", "and --measured_target_ms both set the measured target",
                              "pass one of them")
        reference_arch(cfg, space)
    if cfg.derive_samples < 0:
        raise ConfigError("<flags>", "--derive_samples", f"must be >= 0, got {cfg.derive_samples}",
                          "pass 0 (the argmax derivation) or a number of networks to draw, e.g. 20")
    if cfg.derive_proposal not in ("uniform", "alpha"):
        raise ConfigError("<flags>", "--derive_proposal", f"unknown proposal {cfg.derive_proposal!r}",
                          "use uniform or alpha")
    if cfg.derive_samples and not cfg.derive_tolerance:
        raise ConfigError("<flags>", "--derive_samples", "draws networks into the latency band, but "
                          "--derive_tolerance=0", "pass --derive_tolerance > 0 (e.g. 0.05)")
    if cfg.derive_measure and not cfg.derive_tolerance:
        raise ConfigError("<flags>", "--derive_measure", "needs a latency band to measure against, but "
                          "--derive_tolerance=0", "pass --derive_tolerance > 0 (e.g. 0.05)")
    if cfg.latency_table and os.path.exists(os.path.expanduser(cfg.latency_table)):
        from proxyless_tf.latency.table import LatencyTable

        # the space check here; the class count is checked once the data says it (or the flag does)
        table = LatencyTable.load(os.path.expanduser(cfg.latency_table))
        check_table_covers(cfg, table, latency_space(cfg, space), cfg.latency_num_classes)
        if cfg.derive_measure:
            from proxyless_tf.latency.measured_derivation import check_measurable

            check_measurable(table, table.path)
    from proxyless_tf.data import datasets as data_lib

    data_lib.check_data_dir(cfg.data_dir, cfg.dataset)
    if os.path.exists(cfg.out_dir) and not os.path.isdir(cfg.out_dir):
        raise ConfigError(cfg.out_dir, "--out_dir", "is a file, not a directory", "pass a directory path")
    return space


# ---- the search ----------------------------------------------------------------------------------------
def run_search(cfg):
    """Run one search; returns a dict of the results (also written to the run directory)."""
    import keras

    from proxyless_tf.data import datasets as data_lib
    from proxyless_tf.runtime import distribute
    from proxyless_tf.runtime import resume
    from proxyless_tf.search.supernet import SuperNet

    t_start = time.time()
    strategy = distribute.make_strategy(cfg.strategy, cfg.cpu_devices, cfg.cluster_timeout)  # before any TF op
    out = distribute.worker_dir(cfg.out_dir, strategy)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        resume.enable_determinism(cfg.seed)
    space = check_config(cfg)
    data = data_lib.search_data(cfg.dataset, space.input_shape, cfg.batch_size, cfg.valid_size,
                                cfg.valid_batch_size, cfg.seed, cfg.data_dir, cfg.manual_dir, cfg.max_train,
                                label_cache_dir=os.path.join(os.path.expanduser("~"), ".cache", "proxyless_tf"))
    lat_space, lat_nc = latency_space(cfg, space), latency_classes(cfg, data.num_classes)
    table = load_table(cfg, lat_space, lat_nc)
    measurer = None
    if cfg.derive_measure:  # refused here, not after the search, when this host is not the table's
        from proxyless_tf.latency.measured_derivation import backend_like

        measurer = backend_like(table, table.path)
    target, rng = resolve_target(cfg, table, lat_space, lat_nc)
    loss = None if cfg.latency_loss in (None, "none") else cfg.latency_loss
    os.makedirs(out, exist_ok=True)  # only now: a run that fails its checks leaves no directory behind
    write_config(os.path.join(out, "config.json"), cfg)
    steps = cfg.steps_per_epoch or data.steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(cfg.weight_lr, decay_steps=max(1, steps * cfg.epochs))
    with strategy.scope():  # variables, both optimizers' slots: mirrored on every replica
        net = SuperNet(space, data.num_classes, table, mode=cfg.mode, seed=cfg.seed, latency_space=lat_space,
                       latency_num_classes=lat_nc, weight_sharing=cfg.weight_sharing,
                       weight_sampling=cfg.weight_sampling, sandwich=cfg.sandwich,
                       distill=cfg.distill, warmup_path=cfg.warmup_path)
        kernels = None  # None: --nocpu_kernels; all-zero counts: a GPU or oneDNN off, nothing to rebind
        if cfg.cpu_kernels:
            from proxyless_tf.layers import cpu_kernels
            kernels = cpu_kernels.accelerate(net)  # same maths; a quarter fewer traced nodes, so less memory
        net.compile(
            weight_optimizer=keras.optimizers.SGD(schedule, momentum=cfg.weight_momentum, nesterov=True,
                                                  weight_decay=cfg.weight_decay or None),
            arch_optimizer=keras.optimizers.Adam(cfg.arch_lr, beta_1=0.0, beta_2=cfg.arch_beta2),
            latency_loss=loss, target_ms=target,
            loss_params={"alpha": cfg.loss_alpha, "beta": cfg.loss_beta, "lambda": cfg.loss_lambda},
            arch_every=cfg.arch_every, warmup_epochs=cfg.warmup_epochs,
            reinforce_w=cfg.reinforce_w, baseline_decay=cfg.reinforce_baseline_decay,
            reinforce_samples=cfg.reinforce_samples, reinforce_w_under=cfg.reinforce_w_under)
    distribute.fix_multi_worker_fit(net, strategy)
    history = []
    guard, ckpt, alphas = make_callbacks(out, history, cfg.max_abs_alpha)
    state = resume.ResumeState(os.path.join(out, "resume"), cfg.fingerprint())
    meta = state.load()
    start_epoch, start_step, metrics = 0, 0, None
    if meta:
        metrics = state.restore(net, meta)
        start_epoch, start_step = meta["epoch"], meta["step"]
        history.extend(meta["extra"].get("alpha_history", []))
        ckpt.saved_epoch = meta["extra"].get("saved_epoch")
        print(f"search: resuming {out} at epoch {start_epoch + 1} step {start_step} (of {steps})", flush=True)
    saver = resume.make_callback(state, steps, cfg.checkpoint_every, start_epoch, start_step, metrics,
                                 extra_fn=lambda: {"alpha_history": history, "saved_epoch": ckpt.saved_epoch},
                                 ok_fn=lambda: guard.bad is None)
    guard.offset = saver.offset
    callbacks = [
        guard, ckpt, alphas,
        keras.callbacks.TensorBoard(os.path.join(out, "tensorboard"), write_graph=False),
        saver,  # last: an epoch's checkpoint includes that epoch's α history
    ]
    if strategy.watchdog is not None:
        callbacks.append(distribute.cluster_joined_callback(strategy.watchdog))
    print(f"search: {data.num_train} train / {data.num_valid} valid images ({data.source}), {steps} steps "
          f"per epoch of global batch {cfg.batch_size} on {strategy.num_replicas_in_sync} replica(s); "
          f"target {target:.4g} ms in reachable [{rng[0]:.4g}, {rng[1]:.4g}] ms; cpu kernels "
          + (", ".join(f"{k} {v}" for k, v in kernels.items()) if kernels else "off"), flush=True)
    with distribute.worker_loss_as_error(strategy, state):
        resume.fit_resumable(net, lambda e, s: distribute.for_strategy(data.stream(e, s, cfg.epochs, steps),
                                                                       strategy),
                             cfg.epochs, steps, callbacks, start_epoch, start_step, verbose=cfg.verbose)
    if guard.bad:
        epoch, step, name, what = guard.bad
        where = (f"kept at {ckpt.path} (epoch {ckpt.saved_epoch})" if ckpt.saved_epoch
                 else "none was written (it failed in the first epoch)")
        fix = ("lower --arch_lr (or raise --max_abs_alpha) and rerun" if name == "alpha"
               else "lower --weight_lr or --arch_lr and rerun")
        raise ConfigError("<training>", name, f"{what} at epoch {epoch} step {step}; search stopped; "
                          f"last good checkpoint {where}", f"{fix} with another --out_dir")
    argmax_arch = net.derive_arch()
    argmax_pred = table.predict(net.latency_arch(argmax_arch), lat_nc)
    measured, pick, ranked_by_pick = None, None, {}
    if cfg.derive_samples:  # every worker the same: same draws, same data, same seed
        from proxyless_tf.search import sampled_derivation

        def pick(table_target, tolerance):
            arch, ranked = sampled_derivation.pick(net, data, cfg.derive_samples, cfg.derive_proposal, cfg.seed,
                                                   table_target, tolerance, cfg.bn_recalibration_steps,
                                                   cfg.derive_mode == "ceiling")
            ranked_by_pick[tuple(arch.ops)] = ranked
            return arch
    # only the chief measures: the other workers' arch.json is a side copy, and workers sharing a
    # host would time each other's interpreters (on one host they are two processes on one CPU)
    if measurer is not None and distribute.is_chief(strategy):
        arch, measured = derive_on_device(net, table, measurer, lat_nc, target, cfg, pick)
    elif pick is not None:
        arch = pick(target, cfg.derive_tolerance)
    elif cfg.derive_tolerance:
        arch = net.derive_arch(target_ms=target, tolerance=cfg.derive_tolerance, ceiling=cfg.derive_mode == "ceiling")
    else:
        arch = argmax_arch
    sampled = ranked_by_pick.get(tuple(arch.ops))  # the candidates of the round whose pick was kept
    if sampled:
        files_lib.write_json_atomic(os.path.join(out, "derive_samples.json"), sampled)
    changes = sum(int(a != b) for a, b in zip(arch.ops, argmax_arch.ops))
    arch.to_json(os.path.join(out, "arch.json"))
    argmax_arch.to_json(os.path.join(out, "arch_argmax.json"))
    valid_acc = net.evaluate_argmax(data.valid, data.search, cfg.bn_recalibration_steps, arch=arch)
    pred = table.predict(net.latency_arch(arch), lat_nc)
    wall = time.time() - t_start
    text = summary_text(cfg, space, table, target, rng, arch, pred, valid_acc, history, wall, ckpt.saved_epoch,
                        argmax_pred, changes, measured, sampled)
    files_lib.write_text_atomic(os.path.join(out, "summary.txt"), text + "\n")
    result = {"target_ms": target, "range_ms": list(rng), "predicted_ms": pred, "valid_acc": valid_acc,
              "argmax_predicted_ms": argmax_pred, "derive_changed_layers": changes, "argmax_ops": argmax_arch.ops,
              "ops": arch.ops, "wall_s": wall, "latency_table": table.path,
              "latency_input_shape": list(lat_space.input_shape), "latency_num_classes": lat_nc,
              "cpu_kernels": kernels}
    if measured is not None:
        result.update(measured_ms=measured[0], measured_rounds=measured[1], measured_target_ms=measured[2])
        if cfg.measured_reference:
            result.update(measured_reference_ops=reference_arch(cfg, space).ops)
    if sampled:
        result.update(derive_samples=len(sampled), derive_sample_scores=[c["score"] for c in sampled])
    files_lib.write_json_atomic(os.path.join(out, "result.json"), result)
    state.clear()  # finished: the same command now runs a new search
    print(text, flush=True)
    return result
