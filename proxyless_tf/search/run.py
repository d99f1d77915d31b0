"""One architecture search, start to finish, as a library call (the CLI only maps flags here).

`run_search(SearchConfig(...))` in stages, each a function below: `prepare` (the checks
that read files, the data, the latency table built and cached when asked, the target inside
the reachable range), `build_supernet` (the SuperNet's and compile's own checks), `load_resume`
(a checkpoint left in the run directory, checked and restored), and only then the first write
into the run directory, so a run that fails any check leaves an existing run directory
byte-identical; then `fit_search` (Keras callbacks: TensorBoard, per-epoch
α history, a checkpoint written only while the numbers are finite, a guard that stops at
NaN/inf or a diverging α, a resume checkpoint every `checkpoint_every` steps), `derive`
(`search.derive`) and `write_results`: arch.json, alpha_history.json, tensorboard/,
checkpoints/, result.json, summary.txt (`search.summary`).

Killed and started again with the same configuration, a search continues from its last
resume checkpoint (`runtime/resume.py`: weights, α, both optimizers, the sampling generators,
the metrics, the step counters, the α history) on the same data order, so with
`deterministic=True` it ends with the arch.json and α of an uninterrupted run.
"""

import dataclasses
import os
import time

from proxyless_tf import files as files_lib
from proxyless_tf.search.callbacks import check_stopped, make_callbacks
from proxyless_tf.search.config import write_config
from proxyless_tf.search.derive import derive
from proxyless_tf.search.inputs import (check_config, check_space_inputs, latency_classes, latency_space, load_table,
                                        reference_arch, resolve_target, space_for_data)
from proxyless_tf.search.summary import alpha_decision, summary_text


def run_search(cfg, data=None):
    """Run one search (a `SearchConfig`); returns a dict of the results (also written to the run directory).

    `data`: anything `proxyless_tf.data.sources.open_source` accepts (a tf.data.Dataset of
    (image, label), (x, y) arrays, an ImageSource, a folder path); then `cfg.dataset` is ignored
    and config.json records the data's name."""
    import keras

    from proxyless_tf.data import damaged
    from proxyless_tf.runtime import distribute, resume

    t_start = time.time()
    strategy = distribute.make_strategy(cfg.strategy, cfg.cpu_devices, cfg.cluster_timeout)  # before any TF op
    out = distribute.worker_dir(cfg.out_dir, strategy)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        resume.enable_determinism(cfg.seed)
    inp = prepare(cfg, data)
    if data is not None:
        cfg = dataclasses.replace(cfg, dataset=inp.data.dataset.name)
    net, kernels = build_supernet(cfg, inp, strategy)
    resumed = load_resume(cfg, net, out)
    # only now, every check passed: a run that fails one leaves no directory behind, and an existing
    # run directory (its config.json, its resume checkpoint) exactly as it was
    os.makedirs(out, exist_ok=True)
    write_config(os.path.join(out, "config.json"), cfg)
    history, ckpt, state = fit_search(cfg, net, inp, strategy, out, kernels, resumed)
    arch, argmax_arch, measured, sampled = derive(cfg, net, inp.data, inp.table, inp.lat_nc, inp.target,
                                                  inp.measurer, chief=distribute.is_chief(strategy))
    result, text = write_results(cfg, out, inp, net, arch, argmax_arch, measured, sampled, history,
                                 ckpt.saved_epoch, t_start)
    result["cpu_kernels"] = kernels
    damaged.report(inp.data.dataset)  # files the stream skipped as undecodable: one note line
    files_lib.write_json_atomic(os.path.join(out, "result.json"), result)
    state.clear()  # finished: the same command now runs a new search
    print(text, flush=True)
    return result


@dataclasses.dataclass
class Inputs:
    """What a search runs on, read and checked before anything is written."""

    space: object
    data: object
    lat_space: object  # the space the table prices (`latency_resolution`)
    lat_nc: int  # classifier width of the table's head entry
    table: object
    target: float
    range_ms: tuple
    measurer: object  # the backend `derive_measure` times networks with, or None
    steps: int  # per epoch


def prepare(cfg, data=None):
    """The checks that read files, the data (its channels and size against the space's), the
    latency table (built when asked) and the target; `data` as in `run_search`."""
    from proxyless_tf.data import datasets as data_lib
    from proxyless_tf.data.image_source import default_cache_dir
    from proxyless_tf.data.sources import open_source

    cache_dir = default_cache_dir()
    checked = check_config(cfg, data=data is None)
    source = open_source(cfg.dataset if data is None else data, cfg.data_dir, cfg.manual_dir, cache_dir=cache_dir)
    space = space_for_data(cfg, source)
    if checked is None:  # the space took its input from the data: its file checks run now
        check_space_inputs(cfg, space)
    data = data_lib.search_data(source, space.input_shape, cfg.batch_size, cfg.valid_size, cfg.valid_batch_size,
                                cfg.seed, max_train=cfg.max_train, label_cache_dir=cache_dir)
    lat_space, lat_nc = latency_space(cfg, space), latency_classes(cfg, data.num_classes)
    table = load_table(cfg, lat_space, lat_nc)
    measurer = None
    if cfg.derive_measure:  # refused here, not after the search, when this host is not the table's
        from proxyless_tf.latency.measured_derivation import backend_like

        measurer = backend_like(table, table.path)
    target, rng = resolve_target(cfg, table, lat_space, lat_nc)
    return Inputs(space, data, lat_space, lat_nc, table, target, rng, measurer,
                  cfg.steps_per_epoch or data.steps_per_epoch)


def build_supernet(cfg, inp, strategy):
    """The compiled SuperNet under `strategy`, and the CPU kernels it was given (None: off)."""
    import keras

    from proxyless_tf.runtime import distribute
    from proxyless_tf.search.supernet import SuperNet

    # float(): Keras refuses an int momentum or learning rate, which a Python caller's config may hold
    schedule = keras.optimizers.schedules.CosineDecay(float(cfg.weight_lr), decay_steps=max(1, inp.steps * cfg.epochs))
    with strategy.scope():  # variables, both optimizers' slots: mirrored on every replica
        net = SuperNet(inp.space, inp.data.num_classes, inp.table, mode=cfg.mode, seed=cfg.seed,
                       latency_space=inp.lat_space, latency_num_classes=inp.lat_nc, weight_sharing=cfg.weight_sharing,
                       weight_sampling=cfg.weight_sampling, sandwich=cfg.sandwich, distill=cfg.distill,
                       warmup_path=cfg.warmup_path)
        kernels = None  # None: cpu_kernels off; all-zero counts: a GPU or oneDNN off, nothing to rebind
        if cfg.cpu_kernels:
            from proxyless_tf.layers import cpu_kernels
            kernels = cpu_kernels.accelerate(net)  # same maths; a quarter fewer traced nodes, so less memory
        net.compile(
            weight_optimizer=keras.optimizers.SGD(schedule, momentum=float(cfg.weight_momentum), nesterov=True,
                                                  weight_decay=float(cfg.weight_decay) or None),
            arch_optimizer=keras.optimizers.Adam(float(cfg.arch_lr), beta_1=0.0, beta_2=float(cfg.arch_beta2)),
            latency_loss=None if cfg.latency_loss in (None, "none") else cfg.latency_loss, target_ms=inp.target,
            loss_params={"alpha": cfg.loss_alpha, "beta": cfg.loss_beta, "lambda": cfg.loss_lambda},
            arch_every=cfg.arch_every, warmup_epochs=cfg.warmup_epochs,
            reinforce_w=cfg.reinforce_w, baseline_decay=cfg.reinforce_baseline_decay,
            reinforce_samples=cfg.reinforce_samples, reinforce_w_under=cfg.reinforce_w_under)
    distribute.fix_multi_worker_fit(net, strategy)  # Keras 3.15's multi-worker fit, on this instance only
    return net, kernels


@dataclasses.dataclass
class Resumed:
    """The resume checkpoint of a run directory (`meta` None: none there, a fresh run)."""

    state: object  # `resume.ResumeState` of OUT/resume
    meta: dict
    metrics: list  # the metric arrays `ResumeState.restore` returned, or None


def load_resume(cfg, net, out):
    """OUT/resume/'s checkpoint, checked and restored into `net` before anything is written: a
    checkpoint of another configuration, a `state.json` that is not an object or a damaged weights
    file is one ConfigError line, and the run directory is left as it was."""
    from proxyless_tf.runtime import resume

    state = resume.ResumeState(os.path.join(out, "resume"), cfg.fingerprint())
    meta = state.load()
    return Resumed(state, meta, state.restore(net, meta) if meta else None)


def fit_search(cfg, net, inp, strategy, out, kernels, resumed):
    """Fit `net` for the configured epochs, continuing from `resumed` (`load_resume`) when a killed
    run left a checkpoint; returns (α history, the good-checkpoint callback, the resume state).
    A NaN/inf or a diverging α stops the search with one ConfigError."""
    import keras

    from proxyless_tf.runtime import distribute, resume

    history = []
    guard, ckpt, alphas = make_callbacks(out, history, cfg.max_abs_alpha)
    state, meta, metrics = resumed.state, resumed.meta, resumed.metrics
    start_epoch, start_step = 0, 0
    if meta:
        start_epoch, start_step = meta["epoch"], meta["step"]
        history.extend(meta["extra"].get("alpha_history", []))
        ckpt.saved_epoch = meta["extra"].get("saved_epoch")
        print(f"search: resuming {out} at epoch {start_epoch + 1} step {start_step} (of {inp.steps})", flush=True)
    saver = resume.make_callback(state, inp.steps, cfg.checkpoint_every, start_epoch, start_step, metrics,
                                 extra_fn=lambda: {"alpha_history": history, "saved_epoch": ckpt.saved_epoch},
                                 ok_fn=lambda: guard.bad is None)
    guard.offset = saver.offset
    callbacks = [guard, ckpt, alphas, keras.callbacks.TensorBoard(os.path.join(out, "tensorboard"), write_graph=False),
                 saver]  # the saver last: an epoch's checkpoint includes that epoch's α history
    if strategy.watchdog is not None:
        callbacks.append(distribute.cluster_joined_callback(strategy.watchdog))
    data = inp.data
    print(f"search: {data.num_train} train / {data.num_valid} valid images ({data.source}), {inp.steps} steps "
          f"per epoch of global batch {cfg.batch_size} on {strategy.num_replicas_in_sync} replica(s); "
          f"target {inp.target:.4g} ms in reachable [{inp.range_ms[0]:.4g}, {inp.range_ms[1]:.4g}] ms; cpu kernels "
          + (", ".join(f"{k} {v}" for k, v in kernels.items()) if kernels else "off"), flush=True)
    with distribute.worker_loss_as_error(strategy, state):
        resume.fit_resumable(net, lambda e, s: distribute.for_strategy(data.stream(e, s, cfg.epochs, inp.steps),
                                                                       strategy),
                             cfg.epochs, inp.steps, callbacks, start_epoch, start_step, verbose=cfg.verbose)
    check_stopped(guard, ckpt)
    return history, ckpt, state


def write_results(cfg, out, inp, net, arch, argmax_arch, measured, sampled, history, ckpt_epoch, t_start):
    """arch.json, arch_argmax.json, derive_samples.json and summary.txt; returns (result dict, summary)."""
    if sampled:
        files_lib.write_json_atomic(os.path.join(out, "derive_samples.json"), sampled)
    arch.to_json(os.path.join(out, "arch.json"))
    argmax_arch.to_json(os.path.join(out, "arch_argmax.json"))
    valid_acc = net.evaluate_argmax(inp.data.valid, inp.data.search, cfg.bn_recalibration_steps, arch=arch)
    result = {"target_ms": inp.target, "range_ms": list(inp.range_ms),
              "predicted_ms": inp.table.predict(net.latency_arch(arch), inp.lat_nc), "valid_acc": valid_acc,
              "argmax_predicted_ms": inp.table.predict(net.latency_arch(argmax_arch), inp.lat_nc),
              "derive_changed_layers": sum(int(a != b) for a, b in zip(arch.ops, argmax_arch.ops)),
              "argmax_ops": argmax_arch.ops, "ops": arch.ops, "wall_s": time.time() - t_start,
              "latency_table": inp.table.path, "latency_input_shape": list(inp.lat_space.input_shape),
              "latency_num_classes": inp.lat_nc, "alpha": alpha_decision(net.alpha_probs(), arch.ops)}
    if measured is not None:
        result.update(measured_ms=measured[0], measured_rounds=measured[1], measured_target_ms=measured[2])
        if cfg.measured_reference:
            result.update(measured_reference_ops=reference_arch(cfg, inp.space).ops)
    if sampled:
        result.update(derive_samples=len(sampled), derive_sample_scores=[c["score"] for c in sampled])
    text = summary_text(cfg, inp.space, inp.table, result, history, ckpt_epoch, out)
    files_lib.write_text_atomic(os.path.join(out, "summary.txt"), text + "\n")
    return result, text
