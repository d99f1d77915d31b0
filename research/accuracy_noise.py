"""How well retrainings can tell architectures apart: the yardstick for every accuracy claim.

A claim like "the searched network beats the median random one at matched latency" compares
differences of a few tenths of a point. Whether such a difference means anything depends on how
much one architecture's accuracy moves from seed to seed against how much the architectures differ.
This module measures that from the trainings an experiment already made (several seeds per
fixed architecture), with the textbook tools: the one-way random-effects intra-class correlation
(ICC(1)) for the reliability of a k-seed mean, Spearman–Brown for the seeds a target reliability
needs, Kendall's τ between the rankings two seeds give, and a bootstrap over seeds and
architectures for the searched-vs-median-random difference. `trait_taus` says which architecture
traits (depth, width, kernel) a ranking — retrained or a supernet's — orders networks by.
"""

import itertools
import math

import numpy as np
import scipy.stats

from proxyless_tf import space as space_lib


def arch_seed_matrix(rows, groups=("random", "mbv2")):
    """(names, seeds, matrix archs × seeds) of the rows' fixed architectures retrained with every
    seed; an architecture missing a seed is left out (a ragged matrix has no seed-pair ranking)."""
    per = {}
    for r in rows:
        if r["group"] in groups:
            per.setdefault(tuple(r["ops"]), {})[int(r["seed"])] = float(r["test_accuracy"])
    if not per:
        return [], [], np.zeros((0, 0))
    seeds = sorted(set.intersection(*(set(v) for v in per.values())))
    keys = [k for k, v in per.items() if all(s in v for s in seeds)]
    return keys, seeds, np.array([[per[k][s] for s in seeds] for k in keys], dtype=float).reshape(len(keys), -1)


def seeds_for(reliability_1, goal):
    """Spearman–Brown: seeds whose mean reaches `goal` reliability, from one seed's reliability."""
    if not reliability_1 > 0:
        return math.inf
    if reliability_1 >= goal:
        return 1
    return math.ceil(goal * (1 - reliability_1) / ((1 - goal) * reliability_1) - 1e-9)  # 171.0000001 is 171


def seed_noise(matrix, goal=0.9):
    """Within-architecture (seed) spread against between-architecture spread of an archs × seeds
    accuracy matrix. `reliability_1` is ICC(1): the fraction of one training's variance that is the
    architecture, not the seed; `reliability_k` the same for the mean of the k seeds; 0 when the
    archs differ no more than their seeds do (the estimate is clipped at 0)."""
    n, k = matrix.shape
    if n < 2 or k < 2:
        raise ValueError(f"seed noise needs >= 2 architectures with >= 2 seeds each, got {n} x {k}")
    means = matrix.mean(axis=1)
    ms_between = k * means.var(ddof=1)
    ms_within = float(((matrix - means[:, None]) ** 2).sum() / (n * (k - 1)))
    icc1 = max(0.0, (ms_between - ms_within) / (ms_between + (k - 1) * ms_within))
    taus = [float(scipy.stats.kendalltau(matrix[:, a], matrix[:, b]).statistic)
            for a, b in itertools.combinations(range(k), 2)]
    return {"archs": n, "seeds": k, "within_std": math.sqrt(ms_within), "between_std": float(means.std(ddof=1)),
            "reliability_1": icc1, "reliability_k": k * icc1 / (1 + (k - 1) * icc1) if icc1 > 0 else 0.0,
            "seeds_for_goal": seeds_for(icc1, goal), "goal": goal,
            "seed_pair_tau": taus, "seed_pair_tau_mean": float(np.mean(taus))}


def beat_median_bootstrap(searched, matrix, n_boot=10000, seed=0, level=0.9):
    """Searched mean minus the median architecture's seed mean, with a bootstrap interval.

    Each resample draws the searched trainings with replacement, the architectures with
    replacement, and within each drawn architecture its seeds with replacement; so the interval
    carries the seed noise of both sides and the luck of which random archs were drawn.
    `p_positive` is the fraction of resamples where the searched mean is above the median."""
    searched = np.asarray(searched, dtype=float)
    n, k = matrix.shape
    rng = np.random.default_rng(seed)
    s_idx = rng.integers(0, searched.size, size=(n_boot, searched.size))
    a_idx = rng.integers(0, n, size=(n_boot, n))
    k_idx = rng.integers(0, k, size=(n_boot, n, k))
    arch_means = matrix[a_idx[..., None], k_idx].mean(axis=2)
    diffs = searched[s_idx].mean(axis=1) - np.median(arch_means, axis=1)
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return {"diff": float(searched.mean() - np.median(matrix.mean(axis=1))), "lo": float(lo), "hi": float(hi),
            "level": level, "p_positive": float((diffs > 0).mean())}


def claim_noise(rows, goal=0.9, n_boot=10000):
    """The noise report of a matched-latency run's rows: the seed noise of its fixed architectures
    (random and MobileNetV2-style) and, per searched group, the bootstrap of its mean minus the
    median random architecture. None when no two fixed archs share two seeds (nothing to measure)."""
    _, seeds, fixed = arch_seed_matrix(rows, ("random", "mbv2"))
    _, _, random = arch_seed_matrix(rows, ("random",))
    if fixed.shape[0] < 2 or fixed.shape[1] < 2 or random.shape[0] < 1:
        return None
    out = {"seed_ids": seeds, **seed_noise(fixed, goal)}
    for g in ("aware", "blind"):
        accs = [r["test_accuracy"] for r in rows if r["group"] == g]
        if accs:
            out[g] = beat_median_bootstrap(accs, random, n_boot=n_boot)
    return out


def claim_noise_line(noise):
    """One markdown paragraph of `claim_noise`, for the experiment's section."""
    parts = [f"Seed noise (fixed archs, {noise['archs']} × {noise['seeds']}): "
             f"seed std {noise['within_std'] * 100:.2f}, arch std {noise['between_std'] * 100:.2f} points; "
             f"reliability {noise['reliability_1']:.2f} for one training, {noise['reliability_k']:.2f} for the seed "
             f"mean; {noise['seeds_for_goal']} seeds for {noise['goal']:.1f}."]
    for g in ("aware", "blind"):
        if g in noise:
            b = noise[g]
            parts.append(f"{g} − median random: {b['diff'] * 100:+.2f} points, {b['level']:.0%} bootstrap "
                         f"[{b['lo'] * 100:+.2f}, {b['hi'] * 100:+.2f}], ahead in {b['p_positive']:.0%} of resamples.")
    return " ".join(parts)


TRAITS = ("skipped layers", "mean expand ratio", "mean kernel")


def arch_traits(ops):
    """The three things a network of an MBConv space trades against latency: depth (layers set to
    `zero`), width (expand ratio of the layers it keeps) and receptive field (their kernel size).
    A supernet can only guide the search if it values each of them as retraining does."""
    specs = [space_lib.parse_op(op) for op in ops]
    kept = [s for s in specs if not s.is_zero]
    n = len(kept) or 1  # a network of only `zero` layers has width and kernel 0
    return len(specs) - len(kept), sum(s.expand for s in kept) / n, sum(s.kernel for s in kept) / n


def trait_taus(values, keys):
    """Kendall's τ of `values` (one per arch, `keys` their op lists) with each of `TRAITS`; None for a
    trait that does not vary among the archs (τ is undefined there)."""
    traits = np.array([arch_traits(k) for k in keys], dtype=float)
    return [float(scipy.stats.kendalltau(values, traits[:, j]).statistic) if np.ptp(traits[:, j]) > 0
            else None for j in range(len(TRAITS))]
