"""The retraining's input pipelines (in memory and streamed): permutations, augmentation, replay from a position."""

import numpy as np

from proxyless_tf.training import pipeline
from proxyless_tf.training.config import TrainConfig

N, BATCH, PAD = 40, 8, 2


def _arrays():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, 6, 5, 1)).astype(np.float32)
    y = np.arange(N, dtype=np.int32)  # label = index, so every output names its source image
    return x, y


def _batches(cfg, epoch=0, step=0):
    x, y = _arrays()
    return [(a.numpy(), b.numpy()) for a, b in pipeline.memory_dataset(x, y, N, cfg, N // BATCH, epoch, step)]


def test_each_image_is_a_crop_of_its_padded_source_maybe_flipped():
    x, _ = _arrays()
    cfg = TrainConfig(epochs=2, batch_size=BATCH, augment="crop_flip", pad=PAD, seed=3)
    batches = _batches(cfg)
    assert len(batches) == 2 * N // BATCH
    padded = np.pad(x, [[0, 0], [PAD, PAD], [PAD, PAD], [0, 0]])
    offsets, flips = set(), set()
    for epoch in range(2):
        seen = []
        for xb, yb in batches[epoch * N // BATCH:(epoch + 1) * N // BATCH]:
            assert xb.shape == (BATCH, 6, 5, 1)
            for img, onehot in zip(xb, yb):
                src = int(np.argmax(onehot))
                assert onehot.sum() == 1
                seen.append(src)
                found = [(dy, dx, f) for dy in range(2 * PAD + 1) for dx in range(2 * PAD + 1) for f in (0, 1)
                         if np.array_equal(img, (padded[src, dy:dy + 6, dx:dx + 5, :][:, ::-1] if f
                                                 else padded[src, dy:dy + 6, dx:dx + 5, :]))]
                assert found, f"image of source {src} is no crop of it"
                offsets.add(found[0][:2])
                flips.add(found[0][2])
        assert sorted(seen) == list(range(N))  # one epoch = one permutation
    assert flips == {0, 1} and len(offsets) >= 5


def test_epochs_differ_and_no_augment_is_the_identity():
    x, _ = _arrays()
    cfg = TrainConfig(epochs=2, batch_size=BATCH, augment="none", seed=3)
    batches = _batches(cfg)
    order = [int(i) for _, yb in batches for i in np.argmax(yb, 1)]
    assert order[:N] != order[N:]
    for xb, yb in batches:
        np.testing.assert_array_equal(xb, x[np.argmax(yb, 1)])


def test_resumed_stream_replays_the_same_batches():
    cfg = TrainConfig(epochs=3, batch_size=BATCH, augment="crop_flip", pad=PAD, seed=5)
    full = _batches(cfg)
    resumed = _batches(cfg, epoch=1, step=3)
    start = N // BATCH + 3
    assert len(resumed) == len(full) - start
    for (a, b), (c, d) in zip(full[start:], resumed):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


# ---- streamed ------------------------------------------------------------------------------

def _stream(cfg, epoch=0, step=0, size=(12, 10), steps=None):
    import tensorflow as tf

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (N, 12, 10, 3)).astype(np.uint8)
    items = tf.data.Dataset.from_tensor_slices((images, np.arange(N, dtype=np.int64)))
    ds = pipeline.stream_dataset(items, lambda im: (im, True), N, N, size, cfg, steps or N // BATCH, epoch, step)
    return images, [(a.numpy(), b.numpy()) for a, b in ds]


def test_stream_epochs_are_seeded_shuffles_of_raw_pixels():
    cfg = TrainConfig(epochs=2, batch_size=BATCH, augment="none", seed=4, shuffle_buffer=N)
    images, batches = _stream(cfg)
    assert len(batches) == 2 * N // BATCH
    order = [int(i) for _, yb in batches for i in np.argmax(yb, 1)]
    assert sorted(order[:N]) == sorted(order[N:]) == list(range(N)) and order[:N] != order[N:]
    for xb, yb in batches:  # no augmentation: the raw pixels, as float32 0..255 (the model normalises)
        assert xb.dtype == np.float32
        np.testing.assert_array_equal(xb, images[np.argmax(yb, 1)].astype(np.float32))
    _, again = _stream(cfg)
    assert [int(i) for _, yb in again for i in np.argmax(yb, 1)] == order  # same seed, same order


def test_stream_inception_crops_resize_to_the_network_and_replay_after_a_resume():
    cfg = TrainConfig(epochs=3, batch_size=BATCH, augment="inception", seed=2, shuffle_buffer=16)
    _, full = _stream(cfg, size=(8, 8))
    assert full[0][0].shape == (BATCH, 8, 8, 3) and 0 <= full[0][0].min() and full[0][0].max() <= 255
    _, resumed = _stream(cfg, epoch=1, step=2, size=(8, 8))
    start = N // BATCH + 2
    assert len(resumed) == len(full) - start
    for (a, b), (c, d) in zip(full[start:], resumed):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_stream_epoch_longer_than_the_data_repeats_it():
    cfg = TrainConfig(epochs=1, batch_size=BATCH, augment="none", seed=0, shuffle_buffer=N)
    _, batches = _stream(cfg, steps=N // BATCH + 2)
    labels = np.concatenate([np.argmax(yb, 1) for _, yb in batches])
    assert len(labels) == N + 2 * BATCH and set(labels.tolist()) == set(range(N))
