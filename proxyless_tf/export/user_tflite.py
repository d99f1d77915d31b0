"""A user's `.tflite` file opened for timing: sizes bounded before LiteRT allocates, inputs fed, one
invoke checked.

Why not `tflite.open_interpreter` alone: that one is for files we exported. A file from anywhere
can declare a tensor of billions of elements (LiteRT would try to allocate it, and the random
input built for it would take the rest), have no input at all, inputs of a type no random image
fills, or ops that fail only when invoked (a reshape to an impossible shape, a gather outside its
input). Each of these is one `ConfigError` line here, before any timing starts.
"""

import numpy as np

from proxyless_tf.errors import ConfigError

MAX_TENSOR_BYTES = 1 << 28  # 256 MB: a 224x224 network's largest tensor is a few MB
MAX_TOTAL_BYTES = 1 << 30   # every tensor of the model together, before LiteRT reuses their memory
FIX = "re-export the network with tools/export_tflite.py"


def _bytes(detail):
    shape = [int(d) for d in detail["shape"]]
    n = 1
    for d in shape:
        n *= max(d, 0)
    return n * np.dtype(detail["dtype"]).itemsize, shape


def open_user_interpreter(content, source, num_threads=1):
    """A LiteRT interpreter of the flatbuffer `content` with its tensors allocated, refused with one
    line when LiteRT cannot load it, it has no input, or a tensor is larger than the bounds above."""
    from ai_edge_litert.interpreter import Interpreter

    from proxyless_tf import console
    from proxyless_tf.export.tflite import check_flatbuffer

    check_flatbuffer(content, source)
    try:
        with console.native_quiet():
            interp = Interpreter(model_content=content, num_threads=num_threads)
        details = interp.get_tensor_details()
        inputs = interp.get_input_details()
    except (ValueError, RuntimeError) as e:
        raise ConfigError(source, "<file>", f"LiteRT cannot load it ({str(e).splitlines()[0][:200]})", FIX) from None
    if not inputs:
        raise ConfigError(source, "inputs", "the model has no input tensor, so there is nothing to time", FIX)
    total = 0
    for d in details:
        size, shape = _bytes(d)
        total += size
        if size > MAX_TENSOR_BYTES:
            raise ConfigError(source, f"tensor {d['name'][:60]!r}", f"shape {shape} needs {size / 2**20:.0f} MB, "
                              f"more than the {MAX_TENSOR_BYTES >> 20} MB allowed", FIX)
    if total > MAX_TOTAL_BYTES:
        raise ConfigError(source, "tensors", f"{len(details)} tensors need {total / 2**20:.0f} MB together, more "
                          f"than the {MAX_TOTAL_BYTES >> 20} MB allowed", FIX)
    try:
        with console.native_quiet():
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ConfigError(source, "<file>", f"LiteRT cannot allocate its tensors "
                          f"({str(e).splitlines()[0][:200]})", FIX) from None
    return interp


def feed_inputs(interp, source, seed=0):
    """Set every input of `interp` to seeded random values of its type (quantized inputs through
    their scale), then invoke once: a model that fails at invoke is one line, not a traceback
    from the first timed run."""
    rng = np.random.default_rng(seed)
    for d in interp.get_input_details():
        dtype, shape = np.dtype(d["dtype"]), [int(v) for v in d["shape"]]
        if any(v < 1 for v in shape):
            raise ConfigError(source, f"input {d['name'][:60]!r}", f"shape {shape} has an empty or unknown "
                              "dimension", "export the network with a fixed input shape (batch 1)")
        if dtype == np.bool_:
            x = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.floating):
            x = rng.standard_normal(shape).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            scale, zp = d["quantization"]
            if scale:  # a quantized image: random normal values in its scale
                info = np.iinfo(dtype)
                x = np.clip(np.round(rng.standard_normal(shape) / scale + zp), info.min, info.max).astype(dtype)
            else:
                x = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            raise ConfigError(source, f"input {d['name'][:60]!r}", f"type {dtype.name} is not a number a random "
                              "input can fill", "time a network whose inputs are images (float or int8)")
        interp.set_tensor(d["index"], x)
    try:
        interp.invoke()
    except (ValueError, RuntimeError) as e:
        raise ConfigError(source, "<invoke>", f"LiteRT fails running it ({str(e).splitlines()[0][:200]})",
                          FIX) from None
