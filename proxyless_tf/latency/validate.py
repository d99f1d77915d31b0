"""Validate a latency table against whole networks measured on the same device.

Random architectures of the space (`space.sample(seed)`) are built, converted and
measured whole with the backend the table was measured with. One set of seeds fits the
predictor (the linear calibration and per-(layer, op) corrections, corrections.py), a
disjoint set is only predicted: the held-out numbers are the honest ones. `repeat=True`
measures the held-out networks a second time (fresh interpreters, after the first pass), so
the report puts the measurement's own repeat error beside the predictor's: no predictor can
be scored closer than a measurement repeats. Measurements, repeats included, are cached in a
JSON file next to the table (atomic writes after each network), so a long validation that is
killed resumes, and refitting needs no re-run.
"""

import copy
import os
import time

import numpy as np
from proxyless_tf import files as files_lib

from proxyless_tf.models import nets
from proxyless_tf import space as space_lib
from proxyless_tf.errors import ConfigError
from proxyless_tf.latency import calibration as cal_lib
from proxyless_tf.latency import corrections as corr_lib
from proxyless_tf.latency.backends import VOLATILE_FIELDS
from proxyless_tf.latency.table import LatencyStats

# Settings that may differ between the block table and the whole-network runs.
RUN_SETTINGS = ("warmup_runs", "num_runs", "rounds")
# which summary of the runs a lookup reads is the table's choice (`table.statistic` is read on both
# sides), not how the device measures: an older clock=ref table says 'floor' where the backend's
# default is now 'median', and is still the same device
READ_SETTINGS = ("statistic",)


def _busy(backend):
    """Progress-bar value: other processes' CPU use during the last measurement, if known."""
    b = getattr(backend, "last_busy", None)
    return [] if b is None else [("busy", b)]


def samples_path_for(table_path):
    root, _ = os.path.splitext(os.fspath(table_path))
    return root + ".validation.json"


def check_same_device(table, backend, source, fix="validate on the machine and settings the table was built with"):
    """Raise if `backend` does not measure where the table was measured (run counts may differ).
    `fix` is the caller's remedy: validating elsewhere is one, building a table here another."""
    skip = set(VOLATILE_FIELDS) | set(RUN_SETTINGS) | set(READ_SETTINGS)
    have = {k: v for k, v in table.device.items() if k not in skip}
    want = {k: v for k, v in backend.identity().items() if k not in skip}
    for field in sorted(set(have) | set(want)):
        if have.get(field) != want.get(field):
            raise ConfigError(source, f"device.{field}",
                              f"table was measured with {field}={have.get(field)!r}, "
                              f"this backend has {want.get(field)!r}",
                              fix)


class SampleCache:
    """Whole-network measurements by seed, in a JSON file, for one space and device."""

    def __init__(self, path, space, num_classes, device):
        self.path = os.fspath(path) if path else None
        self.header = {"space": space.name, "fingerprint": space.fingerprint(), "num_classes": num_classes,
                       "device": {k: v for k, v in device.items() if k not in VOLATILE_FIELDS}}
        self.samples = {}
        self.repeats = {}  # seed -> LatencyStats of the second measurement (validate(repeat=True))
        if self.path and os.path.exists(self.path):
            d = files_lib.read_json(self.path, "validation samples")
            if not isinstance(d, dict) or d.get("header") != self.header:
                raise ConfigError(self.path, "header",
                                  "cached whole-network measurements are for another space, class count or device",
                                  f"delete {self.path} to measure again")
            try:
                for seed, s in d["samples"].items():
                    self.samples[int(seed)] = {"ops": list(s["ops"]), "stats": LatencyStats(**s["stats"])}
                for seed, st in d.get("repeats", {}).items():
                    self.repeats[int(seed)] = LatencyStats(**st)
            except (KeyError, TypeError, ValueError):
                raise ConfigError(self.path, "samples", "malformed cached sample",
                                  f"delete {self.path} to measure again") from None

    def save(self):
        if self.path:
            d = {"header": self.header,
                 "samples": {str(k): {"ops": v["ops"], "stats": v["stats"].to_dict()}
                             for k, v in sorted(self.samples.items())}}
            if self.repeats:
                d["repeats"] = {str(k): v.to_dict() for k, v in sorted(self.repeats.items())}
            files_lib.write_json_atomic(self.path, d)


def measure_archs(space, backend, num_classes, seeds, cache=None, progress=True, statistic="median"):
    """{seed: (Arch, LatencyStats)} of whole networks, measuring only seeds not in the cache."""
    todo = [s for s in seeds if cache is None or s not in cache.samples]
    bar = None
    if progress and todo:
        import keras

        print(f"measuring {len(todo)} whole networks ({len(seeds) - len(todo)} cached)")
        bar = keras.utils.Progbar(len(todo), unit_name="net", stateful_metrics=["last_ms", "busy"])
    out = {}
    for i, seed in enumerate(todo):
        arch = space.sample(seed)
        stats = backend.measure(nets.build_model(arch, num_classes))
        if cache is not None:
            cache.samples[seed] = {"ops": list(arch.ops), "stats": stats}
            cache.save()
        out[seed] = (arch, stats)
        if bar is not None:
            bar.update(i + 1, values=[("last_ms", getattr(stats, statistic) or stats.median)] + _busy(backend))
    for seed in seeds:
        if seed not in out:
            s = cache.samples[seed]
            arch = space_lib.Arch(space, s["ops"])
            if arch.ops != space.sample(seed).ops:
                raise ConfigError(cache.path, f"samples[{seed}]", "cached arch differs from space.sample(seed)",
                                  f"delete {cache.path} to measure again")
            out[seed] = (arch, s["stats"])
    return out


def measure_repeats(space, backend, num_classes, seeds, cache, progress=True, statistic="median"):
    """{seed: LatencyStats} of a second measurement of each network (a fresh interpreter each),
    measuring only seeds whose repeat is not cached. `cache` may be a bare SampleCache(None, ...)."""
    todo = [s for s in seeds if s not in cache.repeats]
    bar = None
    if progress and todo:
        import keras

        print(f"measuring {len(todo)} held-out networks a second time ({len(seeds) - len(todo)} cached)")
        bar = keras.utils.Progbar(len(todo), unit_name="net", stateful_metrics=["last_ms", "busy"])
    for i, seed in enumerate(todo):
        cache.repeats[seed] = backend.measure(nets.build_model(space.sample(seed), num_classes))
        cache.save()
        if bar is not None:
            bar.update(i + 1, values=[("last_ms", getattr(cache.repeats[seed], statistic) or 0.0)] + _busy(backend))
    return {s: cache.repeats[s] for s in seeds}


def repeat_metrics(first, second):
    """How a second measurement agrees with the first: the metrics a predictor gets, with the second
    pass as the 'prediction' of the first, plus the median |Δ| in %."""
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    m = cal_lib.metrics(b, a)
    m["median_abs_pct"] = float(100 * np.median(np.abs(b / a - 1)))
    return m


def linear_part(cal):
    """The calibration without its corrections (None stays None)."""
    return None if not cal else {k: v for k, v in cal.items() if k != "corrections"}


def predictions(table, calibration, archs, num_classes):
    """(raw sums, linear calibration, full predictor) of `archs` under `calibration`."""
    t = copy.copy(table)
    t.calibration = calibration
    raw, n = _features(table, archs, num_classes)
    return raw, cal_lib.apply(linear_part(calibration), raw, n), np.array([t.predict(a, num_classes) for a in archs])


def learning_curve(table, space, fit, held, sizes, num_classes, kind="linear_blocks", best=None):
    """Held-out accuracy against the number of fit networks: one row per size n (first n of `fit`).

    fit, held: (archs, measured) of the fit pool and of the held-out set; `best`: the held-out
    networks' lower of two passes, when they were measured twice (row["best_of_two"]).
    """
    rows = []
    for n in sizes:
        cal = corr_lib.fit_predictor(table, space, fit[0][:n], fit[1][:n], num_classes, kind)
        _, lin, pred = predictions(table, cal, held[0], num_classes)
        corr = cal.get("corrections")
        rows.append({"n": int(n), "linear": cal_lib.metrics(lin, held[1]), "corrected": cal_lib.metrics(pred, held[1]),
                     "lambda": corr["lambda"] if corr else None})
        if best is not None:
            rows[-1]["best_of_two"] = cal_lib.metrics(pred, best)
    return rows


def best_of_two(first, second):
    """Each network's lower reading of two passes: the reference a predictor is scored against
    when one pass can be disturbed. A disturbance (another process, a slow VM spell) only ever
    adds time, so the lower reading is the undisturbed one whenever either pass was."""
    return np.minimum(np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64))


def _features(table, archs, num_classes):
    raw = np.array([table.raw_sum(a, num_classes) for a in archs])
    n = np.array([table.num_blocks(a) for a in archs])
    return raw, n


def validate(table, space, backend, num_classes, holdout, fit_samples=0, seed0=0, kind="linear_blocks",
             cache_path=None, plot_path=None, progress=True, corrections=True, repeat=False, curve=None,
             curve_plot_path=None):
    """Measure random networks, optionally fit the predictor, score on the held-out set.

    Fit seeds are seed0 .. seed0+fit_samples-1, held-out seeds the next `holdout`, so the
    sets are disjoint. With fit_samples=0 the table's current calibration is scored.
    `corrections=False` fits the linear calibration alone; `repeat` measures the held-out
    networks again and reports the measurement's own agreement (report["repeat"]); `curve`
    (sizes, each <= fit_samples) refits on the first n fit networks and scores the same
    held-out set (report["learning_curve"]).
    Returns a report dict; `table.calibration` is updated in memory when fitting (the
    caller saves the table).
    """
    table.check_space(space, num_classes)
    check_same_device(table, backend, table.path or "<latency table>")
    from proxyless_tf.latency.builder import adopt_reference

    adopt_reference(backend, table)
    cache = SampleCache(cache_path, space, num_classes, table.device) if cache_path else None
    fit_seeds = list(range(seed0, seed0 + fit_samples))
    hold_seeds = list(range(seed0 + fit_samples, seed0 + fit_samples + holdout))
    t0 = time.perf_counter()
    measured = measure_archs(space, backend, num_classes, fit_seeds + hold_seeds, cache, progress, table.statistic)
    seconds = time.perf_counter() - t0

    def split(seeds):
        archs = [measured[s][0] for s in seeds]
        y = np.array([getattr(measured[s][1], table.statistic) for s in seeds])
        return archs, y

    report = {"num_classes": num_classes, "statistic": table.statistic, "fit_seeds": [seed0, seed0 + fit_samples],
              "holdout_seeds": [seed0 + fit_samples, seed0 + fit_samples + holdout],
              "measure_seconds": round(seconds, 1)}
    if repeat:
        rc = cache if cache is not None else SampleCache(None, space, num_classes, table.device)
        t0 = time.perf_counter()
        again = measure_repeats(space, backend, num_classes, hold_seeds, rc, progress, table.statistic)
        report["repeat_seconds"] = round(time.perf_counter() - t0, 1)
        second = [getattr(again[s], table.statistic) for s in hold_seeds]
        report["repeat"] = repeat_metrics(split(hold_seeds)[1], second)
    fit_pts = None
    if fit_samples:
        archs, y = split(fit_seeds)
        table.calibration = corr_lib.fit_predictor(table, space, archs, y, num_classes, kind, corrections)
        raw, lin, pred = predictions(table, table.calibration, archs, num_classes)
        report["fit_raw"] = cal_lib.metrics(raw, y)
        report["fit_linear"] = cal_lib.metrics(lin, y)
        report["fit_calibrated"] = cal_lib.metrics(pred, y)
        fit_pts = (pred, y)
    archs, y = split(hold_seeds)
    raw, lin, pred = predictions(table, table.calibration, archs, num_classes)
    report["holdout_raw"] = cal_lib.metrics(raw, y)
    report["holdout_linear"] = cal_lib.metrics(lin, y)
    report["holdout_calibrated"] = cal_lib.metrics(pred, y)
    best = best_of_two(y, second) if repeat else None
    if repeat:
        report["holdout_best_of_two"] = cal_lib.metrics(pred, best)
    report["calibration"] = copy.deepcopy(table.calibration) if table.calibration else None
    if curve:
        report["learning_curve"] = learning_curve(table, space, split(fit_seeds), (archs, y), curve, num_classes, kind,
                                                  best)
        if curve_plot_path:
            plot_learning_curve(curve_plot_path, report["learning_curve"], report.get("repeat"),
                                title=f"{space.name}: {table.device.get('backend')}, {table.statistic}, "
                                      f"held-out n={len(hold_seeds)}")
    if table.calibration:
        table.calibration["holdout"] = report["holdout_calibrated"]
        table.calibration["holdout_linear"] = report["holdout_linear"]
        table.calibration["holdout_raw"] = report["holdout_raw"]
        table.calibration["holdout_seeds"] = report["holdout_seeds"]
        if repeat:
            table.calibration["holdout_repeat"] = report["repeat"]
            table.calibration["holdout_best_of_two"] = report["holdout_best_of_two"]
    if plot_path:
        plot(plot_path, raw, pred, y, fit_pts,
             title=f"{space.name}: {table.device.get('backend')} {table.device.get('threads')} thread(s)",
             metrics=report["holdout_calibrated"], linear=lin if table.calibration else None)
    return report


def plot_learning_curve(path, rows, repeat=None, title=""):
    """% of held-out networks within ±5 % / ±10 % against the number of fit networks,
    linear calibration and corrected predictor, with the measurement's repeat figures as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=80)
    n = [r["n"] for r in rows]
    for band, color in (("within_5_pct", "tab:blue"), ("within_10_pct", "tab:orange")):
        label = band.split("_")[1]
        ax.plot(n, [r["corrected"][band] for r in rows], "o-", c=color, label=f"corrected, ±{label} %")
        ax.plot(n, [r["linear"][band] for r in rows], "s--", c=color, alpha=0.6, label=f"linear calibration, ±{label} %")
        if rows and "best_of_two" in rows[0]:
            ax.plot(n, [r["best_of_two"][band] for r in rows], "^-.", c=color, alpha=0.8,
                    label=f"predictor vs lower pass, ±{label} %")
        if repeat:
            ax.axhline(repeat[band], c=color, lw=1, ls=":", label=f"repeat measurement, ±{label} %")
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xticks(n)
    ax.set_xticklabels([str(v) for v in n])
    ax.set_ylim(0, 102)
    ax.set_xlabel("measured networks used for the fit")
    ax.set_ylabel("held-out networks within the band (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _save(fig, path, plt)


def _save(fig, path, plt):
    d = os.path.dirname(os.path.abspath(os.fspath(path)))
    os.makedirs(d, exist_ok=True)
    tmp = f"{os.fspath(path)}.tmp.{os.getpid()}.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def plot(path, raw, calibrated, measured, fit_points=None, title="", metrics=None, linear=None):
    """Scatter of predicted vs measured with the y = x line and the ±5% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=80)
    allv = np.concatenate([raw, calibrated, measured] + (list(fit_points) if fit_points else [])
                          + ([linear] if linear is not None else []))
    lo, hi = float(allv.min()) * 0.95, float(allv.max()) * 1.05
    line = np.linspace(lo, hi, 2)
    ax.plot(line, line, "k-", lw=1, label="predicted = measured")
    ax.fill_between(line, line * 0.95, line * 1.05, color="0.85", label="±5%")
    ax.scatter(measured, raw, s=12, marker="x", c="tab:gray", label="raw block sum (held-out)")
    if fit_points is not None:
        ax.scatter(fit_points[1], fit_points[0], s=12, facecolors="none", edgecolors="tab:orange",
                   label="calibrated (fit set)")
    if linear is not None:
        ax.scatter(measured, linear, s=10, marker="+", c="tab:green", label="linear calibration (held-out)")
    ax.scatter(measured, calibrated, s=14, c="tab:blue", label="predictor (held-out)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured whole network (ms)")
    ax.set_ylabel("predicted (ms)")
    if metrics:
        title += (f"\nheld-out n={metrics['n']}: {metrics['within_5_pct']:.0f}% within ±5%, "
                  f"tau={metrics['kendall_tau']:.3f}, MAPE {metrics['mape_pct']:.1f}%")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    _save(fig, path, plt)
