"""Check a latency table against whole networks; fit and store its calibration.

Usage:
  python tools/validate_latency.py --table=run/latency_fashion_mnist.json \
      --space=configs/spaces/fashion_mnist.json --samples=50 --fit --fit_samples=30 \
      --plot=docs/latency_fashion_mnist.png

Random architectures (space.sample(seed)) are measured whole with the table's own
backend settings. With --fit, seeds 0..fit_samples-1 fit the predictor (the linear
calibration and per-(layer, op) corrections, proxyless_tf/latency/corrections.py) and the
next --samples seeds are held out; without it the table's current predictor is scored on
--samples networks. Prints RMSE, mean absolute % error, % within ±5% / ±10% and Kendall's
tau for the raw block sum, the linear calibration and the fitted predictor; with --fit the
predictor and the held-out numbers are saved into the table (atomic rewrite).

  --repeat                 measure the held-out networks a second time (fresh interpreters)
                           and print the measurement's own agreement beside the predictor's,
                           and the predictor against each network's lower pass (a disturbance
                           only adds time, so the lower reading is the undisturbed one)
  --learning_curve=10,25   refit on the first n fit networks, score the same held-out set
                           (needs --fit_samples >= the largest n), plot to TABLE.curve.png

Whole-network measurements (repeats included) are cached in TABLE.validation.json, so a
killed run resumes and a rerun measures nothing it has.
"""

import os
import sys

from absl import flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import latency_flags  # noqa: E402
from proxyless_tf import files as files_lib
from proxyless_tf import space as space_lib  # noqa: E402
from proxyless_tf import cli  # noqa: E402
from proxyless_tf.errors import ConfigError  # noqa: E402

TABLE = flags.DEFINE_string("table", None, "latency table JSON")
SPACE = flags.DEFINE_string("space", None, "search space JSON the table was built for")
SAMPLES = flags.DEFINE_integer("samples", 50, "held-out random architectures")
FIT = flags.DEFINE_bool("fit", False, "fit the calibration on --fit_samples other architectures")
FIT_SAMPLES = flags.DEFINE_integer("fit_samples", 30, "architectures for the fit (with --fit)")
KIND = flags.DEFINE_enum("kind", "linear_blocks", ["linear", "linear_blocks"],
                         "calibration: scale*sum+offset, or also a per-block term")
STATISTIC = flags.DEFINE_enum("statistic", None, ["median", "p5", "floor"],
                              "entry summary to predict and validate with (stored in the table with --fit; "
                              "default: the table's own, p5 for new LiteRT and TF tables)")
SEED = flags.DEFINE_integer("seed", 0, "first architecture seed")
PLOT = flags.DEFINE_string("plot", None, "scatter plot PNG (default: TABLE with .png)")
CACHE = flags.DEFINE_string("cache", None, "whole-network measurement cache (default: TABLE.validation.json)")
REPORT = flags.DEFINE_string("report", None, "also write the report as JSON here")
CORRECTIONS = flags.DEFINE_bool("corrections", True, "with --fit, also fit per-(layer, op) corrections "
                                "(ridge, λ by cross-validation; --nocorrections: the linear calibration alone)")
REPEAT = flags.DEFINE_bool("repeat", False, "measure the held-out networks a second time and report the "
                           "measurement's own repeat error")
CURVE = flags.DEFINE_list("learning_curve", None, "fit-set sizes, e.g. 10,25,50,100: held-out accuracy against "
                          "the number of fit networks (each <= --fit_samples)")
CURVE_PLOT = flags.DEFINE_string("curve_plot", None, "learning-curve PNG (default: TABLE.curve.png)")


def _backend_for(table):
    """The table's backend with its own settings; explicitly given flags override run counts."""
    from proxyless_tf.latency.backends import make_backend

    name = table.device.get("backend")
    if name not in ("litert", "adb", "tf"):
        raise ConfigError(TABLE.value, "device.backend", f"unknown backend {name!r}", "rebuild the table")
    kwargs = {k: table.device[k] for k in latency_flags.PER_BACKEND[name] if k in table.device}
    kwargs.update({k: v for k, v in latency_flags.backend_kwargs(name).items()
                   if flags.FLAGS[k].present})
    return make_backend(name, **kwargs)


def _curve_sizes():
    """--learning_curve as sorted ints, checked against --fit / --fit_samples before anything runs."""
    if not CURVE.value:
        return None
    try:
        sizes = sorted({int(v) for v in CURVE.value})
    except ValueError:
        raise ConfigError("<flags>", "--learning_curve", f"expected integers, got {','.join(CURVE.value)}",
                          "pass e.g. --learning_curve=10,25,50,100") from None
    if not FIT.value or sizes[0] < 3 or sizes[-1] > FIT_SAMPLES.value:
        raise ConfigError("<flags>", "--learning_curve", f"sizes {sizes} need --fit and each between 3 and "
                          f"--fit_samples ({FIT_SAMPLES.value if FIT.value else 'no --fit'})",
                          f"pass --fit --fit_samples={max(sizes[-1], 3)}")
    return sizes


def _line(label, m):
    return (f"{label:22s} n={m['n']:3d}  RMSE {m['rmse_ms']:.4f} ms  MAPE {m['mape_pct']:5.2f}%  "
            f"bias {m['mean_error_pct']:+5.2f}%  within ±5% {m['within_5_pct']:5.1f}%  "
            f"±10% {m['within_10_pct']:5.1f}%  max {m['max_abs_error_pct']:5.1f}%  tau {m['kendall_tau']:.3f}")


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise ConfigError("<command line>", "args", f"unexpected arguments {argv[1:]}", "pass only --flags")
    for f in (TABLE, SPACE):
        if not f.value:
            raise ConfigError("<flags>", f"--{f.name}", "missing", f"pass --{f.name}=PATH.json")
    if SAMPLES.value < 2 or (FIT.value and FIT_SAMPLES.value < 3):
        raise ConfigError("<flags>", "--samples", "need at least 2 held-out and 3 fit architectures",
                          "pass e.g. --samples=50 --fit_samples=30")
    sizes = _curve_sizes()
    from proxyless_tf.latency.table import LatencyTable

    if REPORT.value:
        files_lib.check_output_path(REPORT.value, "--report")
    table = LatencyTable.load(TABLE.value)
    space = space_lib.SearchSpace.from_json(SPACE.value)
    if table.num_classes is None:
        raise ConfigError(TABLE.value, "num_classes", "table does not say its class count", "rebuild the table")
    table.check_space(space, table.num_classes)  # a table of another space fails before TensorFlow loads
    from proxyless_tf.latency import validate as val
    if not FIT.value and not table.calibration:
        print("note: the table has no calibration yet; scoring the raw block sum (use --fit)")
    if STATISTIC.value:
        table.statistic = STATISTIC.value
    backend = _backend_for(table)
    root = os.path.splitext(TABLE.value)[0]
    report = val.validate(table, space, backend, table.num_classes, SAMPLES.value,
                          FIT_SAMPLES.value if FIT.value else 0, SEED.value, KIND.value,
                          cache_path=CACHE.value or val.samples_path_for(TABLE.value),
                          plot_path=PLOT.value or root + ".png", corrections=CORRECTIONS.value,
                          repeat=REPEAT.value, curve=sizes, curve_plot_path=CURVE_PLOT.value or root + ".curve.png")
    if FIT.value:
        print(_line("fit raw sum", report["fit_raw"]))
        print(_line("fit linear calibration", report["fit_linear"]))
        print(_line("fit predictor", report["fit_calibrated"]))
    print(_line("held-out raw sum", report["holdout_raw"]))
    print(_line("held-out linear cal.", report["holdout_linear"]))
    print(_line("held-out predictor", report["holdout_calibrated"]))
    if "repeat" in report:
        r = report["repeat"]
        print(_line("repeat measurement", r) + f"  median |Δ| {r['median_abs_pct']:.2f}%")
        print(_line("predictor vs lower pass", report["holdout_best_of_two"]))
    print(f"statistic: {table.statistic} of each block and of each whole network; "
          f"measuring took {report['measure_seconds']} s" +
          (f" (+{report['repeat_seconds']} s for the repeat)" if "repeat_seconds" in report else ""))
    if table.calibration:
        c = table.calibration
        print(f"calibration: {c['scale']:.4f} * sum + {c.get('per_block', 0.0):.5f} * blocks + {c['offset']:.5f} ms")
        corr = c.get("corrections")
        if corr:
            d = [v for row in corr["layers"] for v in row.values()]
            print(f"corrections: {len(d)} (layer, op) terms, λ {corr['lambda']:.3g} (cross-validated, "
                  f"{corr['cv']['folds']} folds), |δ| median {1e3 * sorted(map(abs, d))[len(d) // 2]:.1f} us, "
                  f"max {1e3 * max(map(abs, d)):.1f} us")
        elif FIT.value and CORRECTIONS.value:
            print("corrections: none (cross-validation preferred the linear calibration, or too few fit networks)")
    for row in report.get("learning_curve", []):
        lin, cor = row["linear"], row["corrected"]
        print(f"learning curve n={row['n']:4d}: linear ±5% {lin['within_5_pct']:5.1f}% ±10% "
              f"{lin['within_10_pct']:5.1f}% tau {lin['kendall_tau']:.3f} | corrected ±5% {cor['within_5_pct']:5.1f}% "
              f"±10% {cor['within_10_pct']:5.1f}% tau {cor['kendall_tau']:.3f}"
              + (f" (λ {row['lambda']:.3g})" if row["lambda"] is not None else " (no corrections)")
              + (f" | vs lower pass ±5% {row['best_of_two']['within_5_pct']:5.1f}% ±10% "
                 f"{row['best_of_two']['within_10_pct']:5.1f}%" if "best_of_two" in row else ""))
    if sizes:
        print(f"learning curve plot: {CURVE_PLOT.value or root + '.curve.png'}")
    if FIT.value:
        table.save(TABLE.value)
        print(f"stored the predictor and held-out metrics in {TABLE.value}")
    print(f"plot: {PLOT.value or root + '.png'}")
    if REPORT.value:
        files_lib.write_json_atomic(REPORT.value, report)


if __name__ == "__main__":
    cli.run(main)
