"""Keras layers: MBConv blocks, nested (weight-shared) candidates, the mixed op, CPU kernels."""
