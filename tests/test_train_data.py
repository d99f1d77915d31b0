"""The retraining's input pipeline: permutations, batch-wise crop/flip, and replay from a position."""

import numpy as np

from proxyless_tf.training import recipe as training

N, BATCH, PAD = 40, 8, 2


def _arrays():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, 6, 5, 1)).astype(np.float32)
    y = np.arange(N, dtype=np.int32)  # label = index, so every output names its source image
    return x, y


def _batches(cfg, epoch=0, step=0):
    x, y = _arrays()
    return [(a.numpy(), b.numpy()) for a, b in training.train_dataset(x, y, N, cfg, N // BATCH, epoch, step)]


def test_each_image_is_a_crop_of_its_padded_source_maybe_flipped():
    x, _ = _arrays()
    cfg = training.TrainConfig(epochs=2, batch_size=BATCH, augment="crop_flip", pad=PAD, seed=3)
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
    cfg = training.TrainConfig(epochs=2, batch_size=BATCH, augment="none", seed=3)
    batches = _batches(cfg)
    order = [int(i) for _, yb in batches for i in np.argmax(yb, 1)]
    assert order[:N] != order[N:]
    for xb, yb in batches:
        np.testing.assert_array_equal(xb, x[np.argmax(yb, 1)])


def test_resumed_stream_replays_the_same_batches():
    cfg = training.TrainConfig(epochs=3, batch_size=BATCH, augment="crop_flip", pad=PAD, seed=5)
    full = _batches(cfg)
    resumed = _batches(cfg, epoch=1, step=3)
    start = N // BATCH + 3
    assert len(resumed) == len(full) - start
    for (a, b), (c, d) in zip(full[start:], resumed):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
