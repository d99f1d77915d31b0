"""Per-channel mean and std of a dataset's pixels: the published values of the standard datasets,
else measured on the training images (all of a split held in memory, `image_source.measured_stats`;
a sample of STATS_IMAGES of a streamed one, `measure`).

They are the constants of `preprocess.normalize` and of the `Normalize` layer a retrained model
carries, so they are decided once, when a source is opened, and travel with it.
"""

import numpy as np

# (mean, std) per channel of [0, 1] pixels; ImageNet's are the usual ones.
NORMALIZATION = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
STATS_IMAGES = 2000  # enough for 3 decimals of a mean; a few seconds of decoding
MIN_STD = 1e-3       # a constant channel (all-black padding, a blank test set) must not divide by ~0


def known(name, channels):
    """The published (mean, std) of `name` when it has `channels` channels, else None."""
    stats = NORMALIZATION.get(name)
    if stats is None or len(stats[0]) != channels:
        return None
    return tuple(float(v) for v in stats[0]), tuple(float(v) for v in stats[1])


def measure(images, channels):
    """(mean, std) per channel of [0, 1] pixels over `images` (a tf.data.Dataset of uint8 images,
    already cut to the sample), every image weighted alike whatever its size."""
    import tensorflow as tf

    def moments(x):
        x = tf.reshape(tf.cast(x, tf.float64) / 255.0, (-1, channels))
        return tf.reduce_mean(x, 0), tf.reduce_mean(tf.square(x), 0)

    m1, m2, n = np.zeros(channels), np.zeros(channels), 0
    for a, b in images.map(moments, num_parallel_calls=tf.data.AUTOTUNE).batch(256):
        m1 += a.numpy().sum(0)
        m2 += b.numpy().sum(0)
        n += len(a)
    if not n:
        return (0.5,) * channels, (0.25,) * channels
    mean = m1 / n
    std = np.sqrt(np.maximum(m2 / n - mean ** 2, 0.0))
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(max(v, MIN_STD)), 4) for v in std)
