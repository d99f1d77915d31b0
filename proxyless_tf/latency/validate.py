"""Validate a latency table against whole networks measured on the same device.

Random architectures of the space (`space.sample(seed)`) are built, converted and
measured whole with the backend the table was measured with. One set of seeds fits the
calibration, a disjoint set is only predicted: the held-out numbers are the honest ones.
Measurements are cached in a JSON file next to the table (atomic writes after each
network), so a long validation that is killed resumes, and refitting needs no re-run.
"""

import os
import time

import numpy as np
from proxyless_tf import files as files_lib

from proxyless_tf.models import nets
from proxyless_tf import space as space_lib
from proxyless_tf.errors import ConfigError
from proxyless_tf.latency import calibration as cal_lib
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
        if self.path and os.path.exists(self.path):
            d = files_lib.read_json(self.path, "validation samples")
            if not isinstance(d, dict) or d.get("header") != self.header:
                raise ConfigError(self.path, "header",
                                  "cached whole-network measurements are for another space, class count or device",
                                  f"delete {self.path} to measure again")
            try:
                for seed, s in d["samples"].items():
                    self.samples[int(seed)] = {"ops": list(s["ops"]), "stats": LatencyStats(**s["stats"])}
            except (KeyError, TypeError, ValueError):
                raise ConfigError(self.path, "samples", "malformed cached sample",
                                  f"delete {self.path} to measure again") from None

    def save(self):
        if self.path:
            files_lib.write_json_atomic(self.path, {
                "header": self.header,
                "samples": {str(k): {"ops": v["ops"], "stats": v["stats"].to_dict()}
                            for k, v in sorted(self.samples.items())}})


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


def _features(table, archs, num_classes):
    raw = np.array([table.raw_sum(a, num_classes) for a in archs])
    n = np.array([table.num_blocks(a) for a in archs])
    return raw, n


def validate(table, space, backend, num_classes, holdout, fit_samples=0, seed0=0, kind="linear_blocks",
             cache_path=None, plot_path=None, progress=True):
    """Measure random networks, optionally fit the calibration, score on the held-out set.

    Fit seeds are seed0 .. seed0+fit_samples-1, held-out seeds the next `holdout`, so the
    sets are disjoint. With fit_samples=0 the table's current calibration is scored.
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
    if fit_samples:
        archs, y = split(fit_seeds)
        raw, n = _features(table, archs, num_classes)
        table.calibration = cal_lib.fit(raw, n, y, kind)
        report["fit_raw"] = cal_lib.metrics(raw, y)
        report["fit_calibrated"] = cal_lib.metrics(cal_lib.apply(table.calibration, raw, n), y)
    archs, y = split(hold_seeds)
    raw, n = _features(table, archs, num_classes)
    report["holdout_raw"] = cal_lib.metrics(raw, y)
    report["holdout_calibrated"] = cal_lib.metrics(cal_lib.apply(table.calibration, raw, n), y)
    report["calibration"] = dict(table.calibration) if table.calibration else None
    if table.calibration:
        table.calibration["holdout"] = report["holdout_calibrated"]
        table.calibration["holdout_raw"] = report["holdout_raw"]
        table.calibration["holdout_seeds"] = report["holdout_seeds"]
    if plot_path:
        fit_pts = None
        if fit_samples:
            fa, fy = split(fit_seeds)
            fr, fn = _features(table, fa, num_classes)
            fit_pts = (cal_lib.apply(table.calibration, fr, fn), fy)
        plot(plot_path, raw, cal_lib.apply(table.calibration, raw, n), y, fit_pts,
             title=f"{space.name}: {table.device.get('backend')} {table.device.get('threads')} thread(s)",
             metrics=report["holdout_calibrated"])
    return report


def plot(path, raw, calibrated, measured, fit_points=None, title="", metrics=None):
    """Scatter of predicted vs measured with the y = x line and the ±5% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=80)
    allv = np.concatenate([raw, calibrated, measured] + (list(fit_points) if fit_points else []))
    lo, hi = float(allv.min()) * 0.95, float(allv.max()) * 1.05
    line = np.linspace(lo, hi, 2)
    ax.plot(line, line, "k-", lw=1, label="predicted = measured")
    ax.fill_between(line, line * 0.95, line * 1.05, color="0.85", label="±5%")
    ax.scatter(measured, raw, s=12, marker="x", c="tab:gray", label="raw block sum (held-out)")
    if fit_points is not None:
        ax.scatter(fit_points[1], fit_points[0], s=12, facecolors="none", edgecolors="tab:orange",
                   label="calibrated (fit set)")
    ax.scatter(measured, calibrated, s=14, c="tab:blue", label="calibrated (held-out)")
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
    d = os.path.dirname(os.path.abspath(os.fspath(path)))
    os.makedirs(d, exist_ok=True)
    tmp = f"{os.fspath(path)}.tmp.{os.getpid()}.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
