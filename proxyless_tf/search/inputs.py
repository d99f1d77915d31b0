"""A search's inputs read from files: the space, the latency table, the target, the data's
shape against the space's, and the one `check_config` that reads them before anything runs.

`check_config(cfg)` is every check that needs a file but neither TensorFlow nor the decoded
data (the values themselves were checked when the `SearchConfig` was built): the CLI calls it
before TensorFlow loads, so a wrong path, a table that does not cover the space, an empty image
folder or a grayscale folder under an RGB space fails in a second, and `run_search` calls it
again. A space whose input size or channels come from the data is resolved once the data is
open (`space_for_data`), still before anything is written.
"""

import os
import time

from proxyless_tf import readers
from proxyless_tf import space as space_lib
from proxyless_tf.errors import ConfigError


def load_space(path, resolution=None, data_shape=None, dataset=None):
    """The search space of `path` at the input size the search runs at.

    A space JSON may leave its input open, `"input_shape": [null, null, 3]` (or C null too):
    `resolution` (--resolution) decides H and W when given, else the data's image size
    `data_shape` (H, W, C; H and W None when the images vary); C comes from the data when open.
    A C the space writes that differs from the data's is one error naming the space file and
    the `dataset`: RGB images are not silently made gray, nor the reverse."""
    d = readers.read_json(path, "search space file")
    shape = d.get("input_shape") if isinstance(d, dict) else None
    if isinstance(shape, list) and len(shape) == 3 and all(v is None or type(v) is int for v in shape):
        h, w, c = shape
        if resolution:
            h = w = int(resolution)
        if data_shape is not None:
            dh, dw, dc = data_shape
            if c is not None and c != dc:
                raise ConfigError(path, "input_shape", f"the space takes {c}-channel images, but {dataset} has "
                                  f"{dc}-channel ones", f"use a space with \"input_shape\": [..., ..., {dc}] (or "
                                  "null to take it from the data), or pass a dataset of "
                                  f"{'RGB' if c == 3 else f'{c}-channel'} images")
            c = dc if c is None else c
            if h is None or w is None:
                if dh is None or dw is None:
                    raise ConfigError(path, "input_shape", f"leaves the input size open and the images of "
                                      f"{dataset} vary in size", "pass --resolution=N (e.g. 224), or write H and "
                                      "W in the space")
                h, w = (dh if h is None else h), (dw if w is None else w)
        d = dict(d, input_shape=[h, w, c])
    source = os.fspath(path) if not resolution else f"{path} at resolution {resolution}"
    return space_lib.SearchSpace.from_dict(d, source=source)


def is_open(path, resolution=None):
    """Whether the space of `path` leaves part of its input to the data (see `load_space`)."""
    d = readers.read_json(path, "search space file")
    shape = d.get("input_shape") if isinstance(d, dict) else None
    if not isinstance(shape, list) or len(shape) != 3:
        return False
    return shape[2] is None or (not resolution and (shape[0] is None or shape[1] is None))


def space_for_data(cfg, source):
    """The search space at the input size `source` gives it (see `load_space`)."""
    return load_space(cfg.space, cfg.resolution, source.image_shape, source.description)


def latency_space(cfg, space):
    """The space the latency term is looked up in: `space`, or the same space at `--latency_resolution`.

    A search at a proxy resolution (`--resolution`, cheap) for a device whose table was
    measured at the deployment resolution runs the network at the proxy size and prices it
    at the deployment size: the searchable layers and candidates are the same, only the
    table keys (input shapes) differ.
    """
    if not cfg.latency_resolution:
        return space
    d = space.to_dict()
    d["input_shape"] = [int(cfg.latency_resolution)] * 2 + [d["input_shape"][2]]
    return space_lib.SearchSpace.from_dict(d, source=f"{cfg.space} at resolution {cfg.latency_resolution}")


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


def check_data(cfg):
    """The checks of `--dataset`/`--data_dir` that need no TensorFlow: an image folder is scanned
    (empty, one class, no readable image, channels against the space's), a tfds name's data_dir
    checked. Returns the folder's FolderScan, or None."""
    from proxyless_tf.data import folder, idx

    if not folder.is_folder_path(cfg.dataset):
        idx.check_data_dir(cfg.data_dir, cfg.dataset)
        return None
    scan = folder.scan(cfg.dataset)
    shape = (scan.size or (None, None)) + (scan.channels,)
    load_space(cfg.space, cfg.resolution, shape, f"image folder {scan.root}")  # channels, open sizes
    return scan


def check_config(cfg, data=True):
    """The checks of `cfg` that read files (space, reference network, table coverage, data
    directory or image folder, run directory); returns the space, or None when it takes part of its
    input from the data (those checks then run in `run.prepare`, once the data is open).
    `data=False`: the data is not `cfg.dataset` (`run_search(data=...)`), so it is not checked here.
    The values are checked by `SearchConfig`."""
    if is_open(cfg.space, cfg.resolution):  # the rest of the file is checked now, at a stand-in size
        d = readers.read_json(cfg.space, "search space file")
        h, w, c = d["input_shape"]
        r = cfg.resolution
        d = dict(d, input_shape=[r or h or 32, r or w or 32, c or 3])
        space_lib.SearchSpace.from_dict(d, source=os.fspath(cfg.space))
        space = None
    else:
        space = load_space(cfg.space, cfg.resolution)
        check_space_inputs(cfg, space)
    if data:
        check_data(cfg)
    if os.path.exists(cfg.out_dir) and not os.path.isdir(cfg.out_dir):
        raise ConfigError(cfg.out_dir, "--out_dir", "is a file, not a directory", "pass a directory path")
    return space


def check_space_inputs(cfg, space):
    """The reference network and the table's coverage, against `space` at its input size."""
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
