"""The one check every label array passes, whichever source it came from."""

import numpy as np

from proxyless_tf.errors import ConfigError


def check_labels(labels, num_classes, source, num_images=None, fix="re-download the dataset"):
    """Labels must be integers in [0, num_classes), one per image: a label of 12 among 10 classes
    would otherwise train on an all-zero one-hot target, or fail deep inside the loss."""
    labels = np.asarray(labels)
    if num_images is not None and len(labels) != num_images:
        raise ConfigError(source, "labels", f"{len(labels)} labels for {num_images} images",
                          "use the labels file that belongs to the images file")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(source, "labels", f"labels of type {labels.dtype} (class indices are integers)", fix)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise ConfigError(source, "labels", f"label {int(labels[bad[0]])} at index {int(bad[0])} is out of range "
                          f"[0, {num_classes}) ({len(bad)} such labels)", fix)
    return labels
