"""Build a latency table: measure every block a space can contain, resumably.

Each key of `required_keys(space, num_classes)` is turned back into the tiny Keras model
it names (a stem, one MBConv block, or the head) and measured by a backend. The table is
saved atomically after every measured key, to the output path itself, so a build that is
killed (Ctrl-C, OOM, a phone that drops off adb) restarts where it stopped: keys already
in the file are kept, not measured again. A file measured for another space, class count
or device is never silently extended.
"""

import os
import sys
import time

from proxyless_tf.models import nets
from proxyless_tf.errors import ConfigError
from proxyless_tf.latency import keys as keys_lib
from proxyless_tf.latency.backends import VOLATILE_FIELDS
from proxyless_tf.latency.table import LatencyTable


def _busy(backend):
    """Progress-bar value: other processes' CPU use during the last measurement, if known."""
    b = getattr(backend, "last_busy", None)
    return [] if b is None else [("busy", b)]


def model_for_key(key, space, num_classes):
    """The tiny Keras model whose latency a key stands for."""
    p = keys_lib.parse_key(key)
    if p["kind"] == "block":
        return nets.build_block_model(p["in_hw"], p["in_channels"], p["op"], p["stride"], p["out_channels"],
                                      space.bn_eps)
    if p["kind"] == "stem":
        if key != keys_lib.stem_key(space):
            raise ValueError(f"stem key {key!r} does not belong to space {space.name!r}")
        return nets.build_stem_model(space)
    if p["kind"] == "head":
        if key != keys_lib.head_key(space, num_classes):
            raise ValueError(f"head key {key!r} does not belong to space {space.name!r}")
        return nets.build_head_model(space, num_classes)
    raise ValueError(f"cannot build a model for key {key!r}")


def _stable(device):
    return {k: v for k, v in device.items() if k not in VOLATILE_FIELDS + ("shard",)}


def check_resumable(table, space, backend, num_classes, path, shard=None):
    """Raise a one-line ConfigError if `table` was not measured for this space/device/classes/shard."""
    fix = f"delete {path} or pass another --out to build a new table"
    want_shard = None if shard is None else f"{shard[0]}/{shard[1]}"
    if table.device.get("shard") != want_shard:
        raise ConfigError(path, "device.shard", f"existing table is shard {table.device.get('shard')!r}, "
                          f"this run measures {want_shard!r}", fix)
    if table.space_fingerprint != space.fingerprint():
        raise ConfigError(path, "space.fingerprint",
                          f"existing table is for space {table.space_name!r} ({table.space_fingerprint}), "
                          f"not {space.name!r} ({space.fingerprint()})", fix)
    if table.num_classes != num_classes:
        raise ConfigError(path, "num_classes",
                          f"existing table's head is for {table.num_classes} classes, not {num_classes}", fix)
    have, want = _stable(table.device), backend.identity()
    for field in sorted(set(have) | set(want)):
        if have.get(field) != want.get(field):
            raise ConfigError(path, f"device.{field}",
                              f"existing table was measured with {field}={have.get(field)!r}, "
                              f"this run uses {want.get(field)!r}", fix)


def adopt_reference(backend, table):
    """clock='ref': measure on the table's own ms scale (its reference_ms), not a fresh one."""
    if table.device.get("reference_ms") is not None and hasattr(backend, "reference_ms"):
        backend.reference_ms = float(table.device["reference_ms"])


def build_table(space, backend, out_path, num_classes, progress=True, resume=True, shard=None):
    """Measure every required key of `space` with `backend`; returns the complete LatencyTable.

    Args:
        space: the SearchSpace whose blocks to measure.
        backend: a `backends.Backend`.
        out_path: JSON file written after every key (atomic rename), final table included.
        num_classes: classifier width of the head entry.
        progress: show progress: a keras Progbar on a terminal, a line every 10 blocks otherwise.
        resume: continue an existing file at out_path (after checking it matches);
            False starts over and overwrites it.
        shard: (index, count): measure only that worker's share of the keys
            (`shards.shard_keys`); the file is then one shard, merged by `shards.merge`.
    """
    out_path = os.fspath(out_path)
    keys = keys_lib.required_keys(space, num_classes)
    if shard is not None:
        from proxyless_tf.latency.shards import shard_keys

        keys = shard_keys(keys, *shard)
    table = None
    if resume and os.path.exists(out_path):
        table = LatencyTable.load(out_path)
        check_resumable(table, space, backend, num_classes, out_path, shard)
        adopt_reference(backend, table)
    if table is None:
        table = LatencyTable(backend.describe(), {}, num_classes, space.name, space.fingerprint(),
                             calibration=None, path=out_path, statistic=getattr(backend, "statistic", "median"))
        if shard is not None:
            table.device["shard"] = f"{shard[0]}/{shard[1]}"
    todo = [k for k in keys if k not in table.entries]
    if todo and getattr(backend, "clock", None) == "ref" and table.device.get("reference_ms") is None:
        backend._reference()  # fixes reference_ms before the first entry is stored
        table.device["reference_ms"] = backend.reference_ms
    bar = None
    if progress and todo:
        import keras

        done = len(keys) - len(todo)
        print(f"latency table {out_path}: {len(keys)} keys, {done} already measured, {len(todo)} to go")
        if sys.stdout.isatty():  # a bar redrawn in place; in a log file, a line every 10 blocks instead
            bar = keras.utils.Progbar(len(todo), unit_name="block", stateful_metrics=["last_ms", "busy"])
    t0 = time.perf_counter()
    for i, key in enumerate(todo):
        table.entries[key] = backend.measure(model_for_key(key, space, num_classes))
        table.save(out_path)  # after every key: a kill loses at most the block in progress
        if bar is not None:
            bar.update(i + 1, values=[("last_ms", getattr(table.entries[key], table.statistic))] + _busy(backend))
        elif progress and ((i + 1) % 10 == 0 or i + 1 == len(todo)):
            print(f"  {i + 1}/{len(todo)} blocks measured in {time.perf_counter() - t0:.0f} s", flush=True)
    if todo:
        table.device["finished"] = backend.describe().get("date")
        table.device["build_seconds"] = round(time.perf_counter() - t0, 1)
        table.save(out_path)
    return table
