"""The latency-aware derivation: from α's argmax, the cheapest edits into a latency band (`derive_toward_target`)."""

import numpy as np

from proxyless_tf import space as space_lib


def derive_toward_target(logp, costs, fixed_cost, target_ms, tolerance, ceiling=False, start=None):
    """Op indices: the argmax (or `start`), then the cheapest edits (in lost log-probability per ms of error
    removed) until the predicted latency is within target ± tolerance.

    With `ceiling` the target is a budget: only latency above it is an error (the argmax is
    kept when it is faster than target x (1 + tolerance), and edits that overshoot downward
    cost nothing extra). Without, it is a band reached from both sides, which is what
    comparing networks at one latency needs; a search below its band then buys latency
    whether or not that buys accuracy.

    `costs`/`fixed_cost` are the table's calibrated per-candidate costs
    (`LatencyTable.layer_costs`, per-block term included), so the band is the one
    `LatencyTable.predict` reports. Single-layer swaps first; when none reduces the error
    (each overshoots: a space's smallest latency step can be wider than the band), a pair
    of swaps in two layers is tried. The argmax is returned unchanged when inside the band.
    `start` (op indices): begin from this network instead of the argmax (`sampled_derivation`).
    """
    cost = [np.asarray(r, np.float64) for r in costs]
    idx = [int(np.argmax(lp)) for lp in logp] if start is None else [int(i) for i in start]
    pred = fixed_cost + sum(cost[l][i] for l, i in enumerate(idx))
    moves = [(l, j) for l in range(len(idx)) for j in range(len(cost[l]))]

    def delta(l, j):  # (change of the prediction, log-probability lost)
        return cost[l][j] - cost[l][idx[l]], logp[l][idx[l]] - logp[l][j]

    def miss(err):
        return max(err, 0.0) if ceiling else abs(err)

    for _ in range(4 * len(idx)):
        err = pred - target_ms
        if miss(err) <= tolerance * target_ms:
            break
        best = None
        for l, j in moves:
            if j != idx[l]:
                d, lost = delta(l, j)
                gain = miss(err) - miss(err + d)
                if gain > 1e-12 and (best is None or lost / gain < best[0]):
                    best = (lost / gain, [(l, j)])
        if best is None:
            for a, (l1, j1) in enumerate(moves):
                if j1 == idx[l1]:
                    continue
                d1, lost1 = delta(l1, j1)
                for l2, j2 in moves[a + 1:]:
                    if l2 != l1 and j2 != idx[l2]:
                        d2, lost2 = delta(l2, j2)
                        gain = miss(err) - miss(err + d1 + d2)
                        if gain > 1e-12 and (best is None or (lost1 + lost2) / gain < best[0]):
                            best = ((lost1 + lost2) / gain, [(l1, j1), (l2, j2)])
        if best is None:
            break
        for l, j in best[1]:
            pred += delta(l, j)[0]
            idx[l] = j
    return idx


def derive_arch(net, target_ms=None, tolerance=0.1, ceiling=False, start=None):
    """(the derived `Arch` of `net.space`, how many layers differ from the argmax of α).

    Without `target_ms` (or without a latency table): the argmax, or `start`. With it, the
    latency-aware edits of `derive_toward_target` on the table's calibrated costs.
    """
    logp = net.alpha_logp()
    if target_ms is not None and net.latency_table is not None:
        idx = derive_toward_target(logp, net._costs, net._fixed_cost, target_ms, tolerance, ceiling, start)
    else:
        idx = [int(np.argmax(lp)) for lp in logp] if start is None else [int(i) for i in start]
    changes = sum(int(i != int(np.argmax(lp))) for i, lp in zip(idx, logp))
    ops = [m.candidates[i] for m, i in zip(net.mixed_ops, idx)]
    return space_lib.Arch(net.space, ops), changes
