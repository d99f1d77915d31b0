"""`--derive_samples=N`: the derived network is the one the supernet scores best among N drawn networks
moved into the latency band, not the argmax of α.

Why: the matched-latency runs (docs/RESULTS.md, the `## Supernet ranking` sections) show every
search's supernet scoring its own α-derived network first while retraining puts that network 4th
to 12th of 12: α is trained on the supernet's own errors, and the ops it favours are the ones its
path sampling trained most, so its argmax carries the supernet's bias. Among networks the search
did not choose, the same supernets' top pick retrained 3rd or 4th of 11 in all four supernets of
`[retrain6]`. So the search's weights are kept as the judge and the choice is taken away from α:
draw networks (uniformly, or from softmax(α)), move each into the band with the table edits the
argmax derivation uses, score each on the validation split with the supernet's weights (BN
re-estimated per network, from the same statistics and seed each time), keep the best. This is
the one-shot selection of SPOS (Guo et al. 2020, there by evolution under the constraint) and
ENAS's derivation (sample from the policy, keep the best on validation), on ProxylessNAS's
supernet; with `--derive_measure` the winner is then corrected on the device like the argmax.
"""

import numpy as np

PROPOSALS = ("uniform", "alpha")


def draw_starts(logp, n, proposal, seed):
    """`n` networks as op indices per layer: uniform over each layer's candidates, or from softmax(α)."""
    if proposal not in PROPOSALS:
        raise ValueError(f"unknown proposal {proposal!r}: use one of {PROPOSALS}")
    rng = np.random.default_rng(seed)
    starts = []
    for _ in range(n):
        if proposal == "uniform":
            starts.append([int(rng.integers(len(lp))) for lp in logp])
        else:
            starts.append([int(rng.choice(len(lp), p=np.exp(lp) / np.exp(lp).sum())) for lp in logp])
    return starts


def candidates(net, n, proposal, seed, target_ms, tolerance, ceiling=False):
    """Distinct (start, arch): each drawn start moved into the table's band by `net.derive_arch`."""
    out, seen = [], set()
    for start in draw_starts(net.alpha_logp(), n, proposal, seed):
        arch = net.derive_arch(target_ms=target_ms, tolerance=tolerance, ceiling=ceiling, start=start)
        if tuple(arch.ops) not in seen:
            seen.add(tuple(arch.ops))
            out.append((start, arch))
    return out


def score_all(net, archs, valid_ds, train_ds, recalibration_steps, seed, log=print):
    """Validation accuracy of each arch with the supernet's weights. Each starts from the same BN
    statistics and RNG state, so a score does not depend on which networks were scored before;
    the statistics are restored afterwards (the final evaluation recalibrates from them too)."""
    import keras

    snapshot = [(v, v.numpy()) for v in net.non_trainable_variables]
    scores = []
    try:
        for i, arch in enumerate(archs):
            for v, value in snapshot:
                v.assign(value)
            keras.utils.set_random_seed(seed)
            scores.append(net.evaluate_argmax(valid_ds, train_ds, recalibration_steps, arch=arch))
            log(f"derive_samples: {i + 1}/{len(archs)} supernet accuracy {scores[-1] * 100:.2f}%")
    finally:
        for v, value in snapshot:
            v.assign(value)
    return scores


def pick(net, data, n, proposal, seed, target_ms, tolerance, recalibration_steps, ceiling=False, log=print):
    """(op indices of the best-scored network, [{ops, score, start}] of every candidate, best first).

    The indices are where a `--derive_measure` correction starts its table edits: from the scored
    network (already in the table's band, so without a correction it is derived unchanged), not
    from its raw draw, so a correction changes the fewest layers of what was scored."""
    cands = candidates(net, n, proposal, seed, target_ms, tolerance, ceiling)
    scores = score_all(net, [a for _, a in cands], data.valid, data.search, recalibration_steps, seed, log)
    order = sorted(range(len(cands)), key=lambda i: -scores[i])
    ranked = [{"ops": cands[i][1].ops, "score": scores[i], "start": cands[i][0]} for i in order]
    best = cands[order[0]][1]
    return [m.candidates.index(op) for m, op in zip(net.mixed_ops, best.ops)], ranked
