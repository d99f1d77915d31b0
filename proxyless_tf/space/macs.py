"""Analytic multiply-add counts, computed from the Arch alone (no model is built).

Counts convolutions and the classifier the way the paper does (BN, activations and the
residual add are not multiply-adds), so the published 320.4M of ProxylessNAS-mobile can
be checked without TensorFlow.
"""

from proxyless_tf import space as space_lib


def _conv_macs(out_hw, kernel, in_ch, out_ch, groups=1):
    return out_hw[0] * out_hw[1] * kernel * kernel * (in_ch // groups) * out_ch


def mbconv_macs(in_hw, in_ch, out_ch, op, stride):
    spec = space_lib.parse_op(op)
    if spec.is_zero:
        return 0
    mid = space_lib.expanded_channels(in_ch, spec.expand)
    out_hw = tuple(space_lib.conv_output_size(v, stride) for v in in_hw)
    macs = 0
    if spec.expand != 1:
        macs += _conv_macs(in_hw, 1, in_ch, mid)
    macs += _conv_macs(out_hw, spec.kernel, mid, mid, groups=mid)
    macs += _conv_macs(out_hw, 1, mid, out_ch)
    return macs


def count_macs(arch, num_classes):
    """Multiply-adds of one forward pass at batch 1."""
    space = arch.space
    st = space.stem
    hw = space.stem_out_hw
    macs = _conv_macs(hw, st["kernel"], space.input_shape[2], st["out_channels"])
    macs += mbconv_macs(hw, st["out_channels"], space.first_block["out_channels"], space.first_block["op"], 1)
    for layer, op in zip(space.layers, arch.ops):
        macs += mbconv_macs(layer.in_hw, layer.in_channels, layer.out_channels, op, layer.stride)
    macs += _conv_macs(space.final_hw, 1, space.final_channels, space.head["out_channels"])
    macs += space.head["out_channels"] * num_classes
    return macs
