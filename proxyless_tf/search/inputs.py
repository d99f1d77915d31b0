"""A search's inputs read from files: the space, the latency table, the target, and the one
`check_config` that reads them before anything runs.

`check_config(cfg)` is every check that needs a file but neither TensorFlow nor the data (the
values themselves were checked when the `SearchConfig` was built): the CLI calls it before
TensorFlow loads, so a wrong path or a table that does not cover the space fails in a second,
and `run_search` calls it again. Nothing is written before it passes.
"""

import os
import time

from proxyless_tf import space as space_lib
from proxyless_tf.errors import ConfigError


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


def check_config(cfg):
    """The checks of `cfg` that read files (space, reference network, table coverage, data
    directory, run directory); returns the space. The values are checked by `SearchConfig`."""
    space = load_space(cfg.space, cfg.resolution)
    if cfg.measured_reference is not None:
        reference_arch(cfg, space)
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
