"""What can be searched: the op grammar, `SearchSpace` and `Arch`, and MAC counting."""

from proxyless_tf.space.ops import (ALLOWED_KERNELS, ZERO, OpSpec, conv_output_size, expanded_channels, op_name,
                                    parse_op)
from proxyless_tf.space.search_space import (ALLOWED_STRIDES, MAX_ACTIVATION, MAX_CHANNELS, MAX_CLASSES, MAX_DEPTH,
                                             MAX_LAYERS, MAX_RESOLUTION, MAX_WEIGHTS, Arch, LayerSpec, SearchSpace,
                                             check_num_classes)

__all__ = ["ALLOWED_KERNELS", "ALLOWED_STRIDES", "MAX_ACTIVATION", "MAX_CHANNELS", "MAX_CLASSES", "MAX_DEPTH",
           "MAX_LAYERS", "MAX_RESOLUTION", "MAX_WEIGHTS", "ZERO", "Arch", "LayerSpec", "OpSpec", "SearchSpace",
           "check_num_classes", "conv_output_size", "expanded_channels", "op_name", "parse_op"]
