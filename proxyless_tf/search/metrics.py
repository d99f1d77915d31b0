"""Metrics of the search that are states rather than averages."""

import keras


class LastValue(keras.metrics.Metric):
    """A metric that reports the latest value (e.g. the expected latency at the end of the epoch)."""

    def __init__(self, name, **kwargs):
        super().__init__(name=name, **kwargs)
        # "mean": every replica holds the same value, and a cross-replica read must not sum them
        self.value = self.add_variable(shape=(), initializer="zeros", name="value", aggregation="mean")

    def update_state(self, value):
        self.value.assign(keras.ops.cast(value, self.value.dtype))

    def result(self):
        return keras.ops.convert_to_tensor(self.value)

    def reset_state(self):
        pass  # keep the last value across epochs: it is a state, not an average
