"""Networks: `build_model` (plain Keras from an `Arch`, no search code, exports without custom
objects) and `SuperNetBase` (the supernet's structure, forward and latency pricing; the search
steps are in `proxyless_tf.search`)."""
