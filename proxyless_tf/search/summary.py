"""The search's closing summary (summary.txt, and what the CLI prints last).

Besides the latency and accuracy of the derived network it says whether α decided it: the
probability α gives each chosen op, α's mean entropy against its maximum (log of the number
of candidates: a uniform α), and a plain sentence when α did not decide: it stayed near
uniform, or the latency-aware derivation rewrote most of its argmax (the network is then
mostly the derivation's choice).
It ends with the command that retrains the network.
"""

import math
import os

# α "did not decide" above this fraction of its maximum entropy: e.g. 1.87 of a possible
# 1.95 nats (7 candidates) is 96 %, and its argmax op then has barely more probability than 1/7
UNDECIDED_ENTROPY = 0.9


def alpha_decision(probs, ops):
    """How far α decided the chosen network.

    probs: per layer, {op: probability} (softmax of α, e.g. `SuperNet.alpha_probs()`);
    ops: the chosen op per layer. Returns {"chosen_p": per layer the probability of its chosen
    op, "entropy": per layer H = -Σ p log p (nats), "max_entropy": per layer log(candidates),
    "mean_entropy", "mean_max_entropy", "entropy_frac": mean_entropy / mean_max_entropy}.
    """
    chosen, ent, top = [], [], []
    for p, op in zip(probs, ops):
        total = sum(p.values())
        q = [v / total for v in p.values()]
        chosen.append(p[op] / total)
        ent.append(-sum(v * math.log(v) for v in q if v > 0))
        top.append(math.log(len(q)))
    mean, mean_max = sum(ent) / len(ent), sum(top) / len(top)
    return {"chosen_p": chosen, "entropy": ent, "max_entropy": top, "mean_entropy": mean,
            "mean_max_entropy": mean_max, "entropy_frac": mean / mean_max if mean_max else 0.0}


def decision_lines(decision, changes, num_layers):
    """Two or three summary lines: the numbers, and a verdict when α did not decide."""
    frac = decision["entropy_frac"]
    lines = [f"alpha           mean entropy {decision['mean_entropy']:.3g} of a possible "
             f"{decision['mean_max_entropy']:.3g} ({frac * 100:.0f}%); p(chosen op) per layer: "
             + " ".join(f"{p:.2f}" for p in decision["chosen_p"])]
    why = []
    if frac > UNDECIDED_ENTROPY:
        why.append(f"it stayed near uniform (entropy above {UNDECIDED_ENTROPY * 100:.0f}% of its maximum), so its "
                   "argmax ops are barely preferred to the others")
    if changes > num_layers / 2:
        why.append(f"the latency derivation changed {changes} of its {num_layers} argmax layers, so the network is "
                   "mostly the derivation's choice")
    if why:
        lines.append("                alpha did not decide this network: " + "; and ".join(why) + ".")
    else:
        lines.append("                alpha decided this network (the derivation changed "
                     f"{changes} of {num_layers} layers)")
    return lines


def next_command(cfg, out_dir):
    """The retraining command for the derived network, with the data flags it needs; for data given
    from Python (arrays, a tf.data.Dataset), which no command line can name, the Python call."""
    arch = os.path.join(out_dir, "arch.json")
    if cfg.dataset in ("arrays", "tf.data"):
        return (f"python: proxyless_tf.training.recipe.train(proxyless_tf.Arch.from_json({arch!r}), your_data, "
                "proxyless_tf.training.config.TrainConfig(), 'runs/my_train')")
    cmd = f"python -m proxyless_tf.train --arch={arch}"
    if cfg.dataset != "fashion_mnist":
        cmd += f" --dataset={cfg.dataset}"
    if cfg.data_dir:
        cmd += f" --data_dir={cfg.data_dir}"
    return cmd


def summary_text(cfg, space, table, result, history, ckpt_epoch, out_dir):
    """The summary of a finished search from its `result` dict (what result.json holds)."""
    target, (lo, hi) = result["target_ms"], result["range_ms"]
    pred, argmax_pred = result["predicted_ms"], result["argmax_predicted_ms"]
    changes, scores = result["derive_changed_layers"], result.get("derive_sample_scores")
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
        f"reachable range {lo:.4g} .. {hi:.4g} ms; target {target:.4g} ms; "
        + (f"reward acc*(T/lat)^{cfg.reinforce_w:g}"
           + (f" over T, ^{cfg.reinforce_w_under:g} under" if cfg.reinforce_w_under is not None else "")
           + f", {cfg.reinforce_samples} arch(s) per update"
           if cfg.mode == "reinforce" else f"loss {cfg.latency_loss}"),
        f"argmax arch     predicted {argmax_pred:.4g} ms ({(argmax_pred - target) / target * 100:+.1f}% vs target)",
        f"derived arch    predicted {pred:.4g} ms ({(pred - target) / target * 100:+.1f}% vs target; latency-aware "
        f"derivation ({cfg.derive_mode}) changed {changes} layer(s)"
        + (f" of the argmax; picked by the supernet's score among {len(scores)} {cfg.derive_proposal} draws in the "
           f"band, {scores[0] * 100:.2f}% .. {scores[-1] * 100:.2f}%)" if scores else ")"),
    ]
    if "measured_ms" in result:
        ms, rounds, on_device = result["measured_ms"], result["measured_rounds"], result["measured_target_ms"]
        lines.append(f"measured        {ms:.4g} ms on {table.device.get('backend')} "
                     f"({(ms - on_device) / on_device * 100:+.1f}% vs target {on_device:.4g} ms on the device; "
                     f"{len({tuple(r['ops']) for r in rounds})} network(s) measured in {len(rounds)} round(s) of "
                     "--derive_measure"
                     + (f"; the target is {cfg.measured_reference}, timed after each" if cfg.measured_reference else "")
                     + ")")
    lines += [
        f"valid accuracy  {result['valid_acc'] * 100:.2f}% (derived net, supernet weights, BN recalibrated, "
        "validation split carved from train)",
        "last epoch      " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(last.items())),
        f"epochs {cfg.epochs} (warm-up {cfg.warmup_epochs}), arch step every {cfg.arch_every}, "
        f"batch {cfg.batch_size}; wall time {result['wall_s'] / 60:.1f} min",
        "ops: " + " ".join(result["ops"]),
        *decision_lines(result["alpha"], changes, len(result["ops"])),
        f"run dir {out_dir}: arch.json, alpha_history.json, tensorboard/, checkpoints/ (last good: epoch {ckpt_epoch})",
        "next: " + next_command(cfg, out_dir),
        "note: at 2-core budgets the search did not beat random networks of matched latency (research/RESULTS.md)",
    ]
    return "\n".join(lines)
