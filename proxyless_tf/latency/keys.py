"""Latency-table keys: one string per distinct piece of a network.

A block's latency depends only on its input shape, op, stride and output channels (the
residual follows from those), so that is its key. The same key format is used by every
backend and by the importer of the official ProxylessNAS table.
"""

from proxyless_tf import space as space_lib


def _hw(hw, c):
    return f"{hw[0]}x{hw[1]}x{c}"


def block_key(in_hw, in_channels, op, stride, out_channels):
    return f"block:{_hw(in_hw, in_channels)}:{op}:s{stride}:{out_channels}"


def stem_key(space):
    st = space.stem
    return f"stem:{_hw(space.input_shape[:2], space.input_shape[2])}:k{st['kernel']}:s{st['stride']}:{st['out_channels']}"


def head_key(space, num_classes):
    return f"head:{_hw(space.final_hw, space.final_channels)}:{space.head['out_channels']}:{num_classes}"


def first_block_key(space):
    fb = space.first_block
    return block_key(space.stem_out_hw, space.stem["out_channels"], fb["op"], 1, fb["out_channels"])


def layer_key(layer, op):
    """Key of one candidate of a searchable layer; None for `zero` (identity costs nothing)."""
    if op == space_lib.ZERO:
        return None
    return block_key(layer.in_hw, layer.in_channels, op, layer.stride, layer.out_channels)


def fixed_keys(space, num_classes):
    """Pieces every architecture of the space has: stem, the fixed first block, head."""
    return [stem_key(space), first_block_key(space), head_key(space, num_classes)]


def arch_keys(arch, num_classes):
    keys = fixed_keys(arch.space, num_classes)
    keys += [k for k in (layer_key(l, op) for l, op in zip(arch.space.layers, arch.ops)) if k]
    return keys


def required_keys(space, num_classes):
    """Every key needed to predict any architecture of the space, in a stable order, no repeats."""
    keys = fixed_keys(space, num_classes)
    for layer in space.layers:
        keys += [k for k in (layer_key(layer, op) for op in layer.candidates) if k]
    return list(dict.fromkeys(keys))


def parse_key(key):
    """Key -> dict of its parts (kind, input shape, ...); used by builders to make the model."""
    parts = key.split(":")
    kind = parts[0]
    h, w, c = (int(v) for v in parts[1].split("x"))
    if kind == "block":
        return {"kind": kind, "in_hw": (h, w), "in_channels": c, "op": parts[2],
                "stride": int(parts[3][1:]), "out_channels": int(parts[4])}
    if kind == "stem":
        return {"kind": kind, "input_shape": (h, w, c), "kernel": int(parts[2][1:]),
                "stride": int(parts[3][1:]), "out_channels": int(parts[4])}
    if kind == "head":
        return {"kind": kind, "in_hw": (h, w), "in_channels": c, "out_channels": int(parts[2]),
                "num_classes": int(parts[3])}
    raise ValueError(f"unknown latency key kind {kind!r} in {key!r}")
