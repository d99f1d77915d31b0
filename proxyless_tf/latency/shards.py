"""One latency table measured by several workers at once: several phones, or host processes.

A table of the paper's mobile space has ~70 blocks; at a few seconds to a minute each on a
phone, a lab with several phones of the same model, or a server with spare cores, wants
them all measuring. The keys are dealt round-robin into N shards; worker I measures shard
I into its own file (`OUT.shardI-of-N.json`, resumable like any table), and the shards
are merged into OUT once all are complete.

Merging refuses what would make one table lie: shards measured with different settings or
on different phone models (only the serial and the run-to-run fields may differ), shards
of another space or class count, and missing or doubly measured keys. With `clock='ref'`
each worker fixes its own reference latency (the ms scale its ratios are stored on); the
merge puts every shard on shard 0's scale (entry x ref_0 / ref_I), which is exact because
the ratios, not the milliseconds, are what each worker measured.
"""

import os
import re

from proxyless_tf.errors import ConfigError
from proxyless_tf.latency import keys as keys_lib
from proxyless_tf.latency.backends import VOLATILE_FIELDS
from proxyless_tf.latency.table import LatencyStats, LatencyTable

# describe() fields that may differ between the workers of one table.
PER_WORKER_FIELDS = VOLATILE_FIELDS + ("serial", "shard")


def parse_shard(text, source="<flags>", field="--shard"):
    """'I/N' -> (I, N) with 0 <= I < N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not int(m.group(2)) or int(m.group(1)) >= int(m.group(2)):
        raise ConfigError(source, field, f"{text!r} is not a shard I/N with 0 <= I < N", "write e.g. 0/2")
    return int(m.group(1)), int(m.group(2))


def shard_keys(keys, index, count):
    """Worker `index` of `count` measures every count-th key from its index on (round-robin)."""
    return [k for i, k in enumerate(keys) if i % count == index]


def shard_path(out_path, index, count):
    root, ext = os.path.splitext(os.fspath(out_path))
    return f"{root}.shard{index}-of-{count}{ext or '.json'}"


def worker_fields(device):
    return {k: v for k, v in device.items() if k not in PER_WORKER_FIELDS}


def _rescaled(stats, factor):
    return LatencyStats(stats.median * factor, stats.p5 * factor, stats.p95 * factor, stats.count,
                        None if stats.floor is None else stats.floor * factor)


def merge(space, num_classes, paths, out_path):
    """Merge complete shard tables (in shard order) into one LatencyTable saved at out_path."""
    shards = [LatencyTable.load(p) for p in paths]
    count = len(shards)
    keys = keys_lib.required_keys(space, num_classes)
    first = shards[0]
    base = worker_fields(first.device)
    ref0 = first.device.get("reference_ms")
    entries = {}
    for i, (path, t) in enumerate(zip(paths, shards)):
        fix = f"delete {path} and rerun the same command"
        if t.space_fingerprint != space.fingerprint() or t.num_classes != num_classes:
            raise ConfigError(path, "space.fingerprint", f"shard is for space {t.space_name!r} with "
                              f"{t.num_classes} classes, not {space.name!r} with {num_classes}", fix)
        if t.device.get("shard") != f"{i}/{count}":
            raise ConfigError(path, "device.shard", f"is {t.device.get('shard')!r}, expected '{i}/{count}'", fix)
        have = worker_fields(t.device)
        for field in sorted(set(have) | set(base)):
            if have.get(field) != base.get(field):
                raise ConfigError(path, f"device.{field}", f"this worker measured with {field}="
                                  f"{have.get(field)!r}, worker 0 with {base.get(field)!r}; one table must "
                                  "come from one device model and one set of settings",
                                  "use phones of one model (or the same flags) for all workers")
        want = shard_keys(keys, i, count)
        missing = [k for k in want if k not in t.entries]
        if missing:
            raise ConfigError(path, "entries", f"{len(missing)} of its {len(want)} keys are not measured "
                              f"(first: {missing[0]!r})", "rerun the same command to finish it")
        factor = 1.0
        if ref0 is not None:
            factor = ref0 / float(t.device["reference_ms"])
        for k in want:
            entries[k] = _rescaled(t.entries[k], factor) if factor != 1.0 else t.entries[k]
    device = dict(first.device)
    device.pop("shard", None)
    device["workers"] = [{"shard": t.device["shard"], "hostname": t.device.get("hostname"),
                          "build_seconds": t.device.get("build_seconds"),
                          **({"serial": t.device["serial"]} if "serial" in t.device else {}),
                          **({"reference_ms": t.device["reference_ms"]} if ref0 is not None else {})}
                         for t in shards]
    if "serial" in device:
        device["serial"] = ",".join(str(t.device.get("serial")) for t in shards)
    device["build_seconds"] = max(float(t.device.get("build_seconds") or 0.0) for t in shards)
    table = LatencyTable(device, {k: entries[k] for k in keys}, num_classes, space.name, space.fingerprint(),
                         calibration=None, path=os.fspath(out_path), statistic=first.statistic)
    table.save(out_path)
    return table
