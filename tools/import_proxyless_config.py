"""Turn an official ProxylessNAS `.config` (net.config JSON) into our Arch JSON.

Usage: python tools/import_proxyless_config.py ../shared/data/proxylessnas/proxyless_mobile.config \
           --out=configs/archs/proxyless_mobile.json

The official file lists blocks flat; stages are recovered where a block changes width or
strides by 2 (zero blocks always continue a stage). Widths come from the file, so the
published networks keep their own channel counts.
"""

import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from proxyless_tf import files as files_lib

from proxyless_tf import space as space_lib  # noqa: E402
from proxyless_tf import cli  # noqa: E402
from proxyless_tf.errors import ConfigError  # noqa: E402

PAPER_CANDIDATES = ["mb_k3_e3", "mb_k3_e6", "mb_k5_e3", "mb_k5_e6", "mb_k7_e3", "mb_k7_e6"]

FLAGS = flags.DEFINE_string("out", None, "where to write the Arch JSON (default: print it)")
NAME = flags.DEFINE_string("name", None, "space name (default: file name without extension)")


def _get(d, key, source, field):
    if not isinstance(d, dict) or key not in d:
        raise ConfigError(source, field, f"missing '{key}'", "pass an official ProxylessNAS net.config file")
    return d[key]


def _int(d, key, source, field, lo=1, hi=None):
    """An integer field of the official file, in range: a string or a float is a clear error, not a traceback."""
    v = _get(d, key, source, f"{field}.{key}")
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        raise ConfigError(source, f"{field}.{key}", f"expected an integer >= {lo}, got {v!r}",
                          "pass an official ProxylessNAS net.config file")
    return v


def _ratio(d, key, source, field):
    v = _get(d, key, source, f"{field}.{key}")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 1 <= v <= 16:
        raise ConfigError(source, f"{field}.{key}", f"expected an expand ratio between 1 and 16, got {v!r}",
                          "pass an official ProxylessNAS net.config file")
    return v


def convert(cfg, source, name):
    """Official config dict -> Arch."""
    fc = _get(cfg, "first_conv", source, "first_conv")
    fm = _get(cfg, "feature_mix_layer", source, "feature_mix_layer")
    blocks = _get(cfg, "blocks", source, "blocks")
    if not isinstance(blocks, list) or len(blocks) < 2:
        raise ConfigError(source, "blocks", "expected a list of at least two blocks", "pass a full net.config")
    bn = cfg.get("bn", {})
    eps = bn.get("eps", 1e-3) if isinstance(bn, dict) else None
    first = _get(blocks[0], "mobile_inverted_conv", source, "blocks[0]")
    if not isinstance(first, dict) or first.get("name") != "MBInvertedConvLayer":
        raise ConfigError(source, "blocks[0]", "the first block must be an MBInvertedConvLayer",
                          "pass an official ProxylessNAS net.config")
    stages, ops = [], []
    width = first_out = _int(first, "out_channels", source, "blocks[0].mobile_inverted_conv")
    for i, b in enumerate(blocks[1:], start=1):
        conv = _get(b, "mobile_inverted_conv", source, f"blocks[{i}]")
        kind = conv.get("name") if isinstance(conv, dict) else None
        if kind == "ZeroLayer":
            if not stages:
                raise ConfigError(source, f"blocks[{i}]", "a zero layer cannot start the network",
                                  "check the file")
            stages[-1]["depth"] += 1
            ops.append(space_lib.ZERO)
            continue
        if kind != "MBInvertedConvLayer":
            raise ConfigError(source, f"blocks[{i}].mobile_inverted_conv.name", f"unsupported layer {kind!r}",
                              "only MBInvertedConvLayer and ZeroLayer occur in ProxylessNAS nets")
        field = f"blocks[{i}].mobile_inverted_conv"
        stride, out = _int(conv, "stride", source, field), _int(conv, "out_channels", source, field)
        if not stages or stride != 1 or out != width:
            stages.append({"width": out, "depth": 0, "stride": stride})
        stages[-1]["depth"] += 1
        width = out
        ops.append(space_lib.op_name(_int(conv, "kernel_size", source, field),
                                     _ratio(conv, "expand_ratio", source, field)))
    cands = list(PAPER_CANDIDATES)
    for op in ops:
        if op != space_lib.ZERO and op not in cands:
            cands.append(op)
    space = space_lib.SearchSpace(
        name=name,
        input_shape=[224, 224, _int(fc, "in_channels", source, "first_conv") if isinstance(fc, dict)
                     and "in_channels" in fc else 3],
        stem={"out_channels": _int(fc, "out_channels", source, "first_conv"),
              "kernel": _int(fc, "kernel_size", source, "first_conv"),
              "stride": _int(fc, "stride", source, "first_conv")},
        first_block={"op": space_lib.op_name(_int(first, "kernel_size", source, "blocks[0].mobile_inverted_conv"),
                                             _ratio(first, "expand_ratio", source, "blocks[0].mobile_inverted_conv")),
                     "out_channels": first_out},
        stages=stages,
        head={"out_channels": _int(fm, "out_channels", source, "feature_mix_layer")},
        candidates=cands,
        allow_zero=True,
        bn_eps=eps,
        source=source,
    )
    return space_lib.Arch(space, ops, source=source)


def main(argv):
    if len(argv) != 2:
        raise ConfigError("<command line>", "CONFIG", "expected exactly one .config file",
                          "run: python tools/import_proxyless_config.py FILE.config --out=ARCH.json")
    path = argv[1]
    cfg = files_lib.read_json(path, "ProxylessNAS config")
    name = NAME.value or os.path.splitext(os.path.basename(path))[0]
    if FLAGS.value:
        files_lib.check_output_path(FLAGS.value)
    arch = convert(cfg, path, name)
    if FLAGS.value:
        arch.to_json(FLAGS.value)
        print(f"wrote {FLAGS.value}: {arch.space.num_layers} searchable layers")
    else:
        import json
        print(json.dumps(arch.to_dict(), indent=2))


if __name__ == "__main__":
    cli.run(main)
