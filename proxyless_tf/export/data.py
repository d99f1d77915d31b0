"""The images an export calibrates on and is checked on, from any `ImageSource`.

A model is exported to take what it was trained to take: raw pixels (0..255) when its first
layer is `Normalize` (every model `training.train` writes), else normalised pixels (an older
`.keras`, fed `(x / 255 - mean) / std` with the dataset's mean and std). Images are resized
(and, for ImageNet-style models, centre-cropped) to the model's input by
`data.preprocess.eval_transform`, the transform of the retraining's evaluation.
Representative and QAT images come from the training split, the checks from the test split.
"""

import dataclasses

import numpy as np

from proxyless_tf.errors import ConfigError

MAX_QAT_BYTES = 1 << 30  # QAT's fine-tuning images are handed to a child process as one array


@dataclasses.dataclass
class ExportData:
    """How to feed a model, and the test images fed that way."""

    raw_pixels: bool        # the model normalises (Normalize layer): feed 0..255
    mean: tuple
    std: tuple
    size_hw: tuple
    style: str              # eval_transform's style: "small" (resize) or "imagenet" (centre crop)
    x_test: np.ndarray      # float32, already in the model's input convention
    y_test: np.ndarray
    class_names: list


def model_normalization(model):
    """(mean, std) of the model's `Normalize` layer, or None for a model that takes normalised input."""
    from proxyless_tf.layers.preprocessing import Normalize

    for layer in model.layers:
        if isinstance(layer, Normalize):
            return tuple(layer.mean), tuple(layer.std)
    return None


def check_model_fits(model, source, model_path):
    """The model takes the source's channels and predicts its classes, or one line says which not."""
    channels, classes = int(model.input_shape[-1]), int(model.output_shape[-1])
    sc = source.image_shape[2]
    if sc is not None and int(sc) != channels:
        raise ConfigError(model_path, "input_shape", f"the model takes {channels}-channel images, "
                          f"{source.description} has {sc}-channel images",
                          "pass the --dataset the model was trained on")
    if classes != int(source.num_classes):
        raise ConfigError(model_path, "output_shape", f"the model predicts {classes} classes, "
                          f"{source.description} has {source.num_classes}", "pass the --dataset the model was trained on")


def _to_arrays(items, decode, size_hw, style, limit):
    """The first `limit` images of `items` ((item, label) pairs) that decode, eval-transformed, as
    numpy arrays. `decode` is `ImageSource.decode_checked`: a file damaged inside is passed over
    (and counted by the source), the next one taken instead."""
    import tensorflow as tf

    from proxyless_tf.data import damaged, preprocess

    def view(item, label):
        image, ok = decode(item)
        return preprocess.eval_transform(image, size_hw, style), label, ok

    ds = damaged.drop_flagged(items.map(view, num_parallel_calls=tf.data.AUTOTUNE)).take(limit).batch(256)
    xs, ys = [], []
    for x, y in ds:
        xs.append(x.numpy().astype(np.float32))
        ys.append(y.numpy().astype(np.int64))
    if not xs:
        return np.zeros((0,) + tuple(size_hw) + (1,), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(xs), np.concatenate(ys)


def _feed(x, data):
    """Raw pixels as the model takes them: as they are, or normalised with the dataset's mean/std."""
    if data.raw_pixels:
        return x
    return ((x / 255.0 - np.asarray(data.mean, np.float32)) / np.asarray(data.std, np.float32)).astype(np.float32)


def prepare(model, source, model_path, num_test, batch_size, style="small"):
    """Check `model` against `source` and read `num_test` test images (a multiple of `batch_size`)."""
    check_model_fits(model, source, model_path)
    norm = model_normalization(model)
    mean, std = norm if norm is not None else (tuple(source.mean), tuple(source.std))
    size_hw = tuple(int(v) for v in model.input_shape[1:3])
    if not source.num_test or source.test() is None:
        raise ConfigError(str(source.name), "test split", f"{source.description} has no test split to check the "
                          "exports on", "pass a dataset with a test split (an image folder holds one out)")
    n = min(num_test, int(source.num_test))
    n -= n % batch_size
    if n < 1:
        raise ConfigError("<flags>", "--batch_size", f"{batch_size} is more than the {source.num_test} test images",
                          "use a smaller --batch_size")
    data = ExportData(norm is not None, tuple(mean), tuple(std), size_hw, style, None, None,
                      list(source.class_names))
    x, y = _to_arrays(source.items("test"), source.decode_checked, size_hw, style, n)
    keep = len(x) - len(x) % batch_size  # fewer when files were damaged: still whole batches
    if keep < 1:
        raise ConfigError(str(source.name), "test split", f"only {len(x)} test image(s) could be decoded, fewer "
                          f"than a batch of {batch_size}", "check the test images, or use a smaller --batch_size")
    data.x_test, data.y_test = _feed(x[:keep], data), y[:keep]
    return data


def training_images(source, data, count, seed):
    """`count` training images picked with `seed`, fed as the model takes them (int8 calibration, QAT)."""
    count = min(int(count), int(source.num_train))
    arrays = source.train_arrays()
    rng = np.random.default_rng(seed)
    if arrays is not None and tuple(arrays[0].shape[1:3]) == tuple(data.size_hw):
        idx = np.sort(rng.choice(len(arrays[0]), count, replace=False))
        x, y = arrays[0][idx].astype(np.float32), np.asarray(arrays[1])[idx].astype(np.int64)
    else:  # streamed: a seeded shuffle of items (paths, encoded records), decoded after the pick
        buffer = int(source.num_train) if source.kind == "folder" else min(max(4 * count, 1000), int(source.num_train))
        items = source.items("train").shuffle(buffer, seed=int(seed))  # a folder lists class by class: all of it
        x, y = _to_arrays(items, source.decode_checked, data.size_hw, data.style, count)
    return _feed(x, data), y


def check_qat_size(count, data, num_train):
    """QAT's images go to the child as one float32 array: refuse a count that would not fit in memory."""
    (h, w), c = data.size_hw, int(data.x_test.shape[-1])
    n = min(int(count), int(num_train))
    size = n * h * w * c * 4
    if size > MAX_QAT_BYTES:
        raise ConfigError("<flags>", "--qat_examples", f"{n} images of {h}x{w}x{c} take {size / 2 ** 30:.1f} GB "
                          f"as float32, more than the {MAX_QAT_BYTES >> 30} GB allowed",
                          f"use at most {MAX_QAT_BYTES // (h * w * c * 4)}")
