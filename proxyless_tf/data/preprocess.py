"""Resizing, augmentation and normalisation in one place, shared by the search, retraining and export.

Every function takes one decoded uint8 image (H, W, C) and returns float32 pixels in [0, 255]
(only `normalize` leaves that range), so a pipeline whose model starts with a `Normalize` layer
feeds the transforms' output as it is, and the search (whose supernet has none) applies
`normalize` last. Channels are never converted here: a 1-channel image stays 1-channel, and a
mismatch with the network is refused where the two meet (one error line), not papered over.

The random transforms are stateless: a `seed` of shape [2] (int32/int64) decides every draw, so
the same image at the same position of a seeded stream is cropped and flipped the same way in
a resumed run as in an uninterrupted one.
"""

AUGMENTS = ("none", "flip", "crop_flip", "inception")
EVAL_STYLES = ("small", "imagenet")
CROP_FRACTION = 0.875  # ImageNet evaluation: resize to size / 0.875, centre crop `size` (256 -> 224)
INCEPTION_SCALE = (0.08, 1.0)
INCEPTION_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def _size(size_hw):
    h, w = (int(v) for v in size_hw)
    return h, w


def fit_image(image_u8, size_hw):
    """uint8 (H, W, C) -> float32 (h, w, C) in [0, 255]: resized (bilinear, antialiased) unless it
    already has that size; the aspect ratio is not kept (a small-image dataset's images all share it)."""
    import tensorflow as tf

    h, w = _size(size_hw)
    x = tf.cast(image_u8, tf.float32)
    if tuple(x.shape[:2]) == (h, w):
        return x
    x = tf.image.resize(x, (h, w), antialias=True)
    return tf.clip_by_value(x, 0.0, 255.0)


def _resize_to_cover(x, h, w, fraction):
    """Resize keeping the aspect ratio so the image covers (h / fraction, w / fraction)."""
    import tensorflow as tf

    shape = tf.cast(tf.shape(x)[:2], tf.float32)
    scale = tf.maximum(h / fraction / shape[0], w / fraction / shape[1])
    new = tf.cast(tf.math.ceil(shape * scale), tf.int32)
    new = tf.maximum(new, [h, w])
    return tf.clip_by_value(tf.image.resize(x, new, antialias=True), 0.0, 255.0)


def eval_transform(image_u8, size_hw, style="small"):
    """The deterministic view of an image for validation, test and calibration.

    style "small": `fit_image` (CIFAR, Fashion-MNIST, folders of one image size);
    "imagenet": shorter side to size / 0.875 (aspect kept), then the centre (h, w) crop — the
    standard ImageNet evaluation, which the official ProxylessNAS code also uses."""
    import tensorflow as tf

    if style not in EVAL_STYLES:
        raise ValueError(f"unknown eval style {style!r}: one of {EVAL_STYLES}")
    h, w = _size(size_hw)
    if style == "small":
        return fit_image(image_u8, (h, w))
    x = _resize_to_cover(tf.cast(image_u8, tf.float32), h, w, CROP_FRACTION)
    shape = tf.shape(x)
    top, left = (shape[0] - h) // 2, (shape[1] - w) // 2
    return tf.ensure_shape(x[top:top + h, left:left + w], (h, w, image_u8.shape[-1]))


def _seeds(seed, n):
    import tensorflow as tf

    return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=n))


def train_transform(image_u8, size_hw, augment, seed, pad=None):
    """The training view of an image, drawn by `seed` ([2] ints; stateless).

    augment "none": `fit_image`; "flip": + a random left-right flip; "crop_flip": fit, zero-pad by
    `pad` pixels (default size / 8: 4 for CIFAR's 32) and take a random (h, w) crop, then flip
    (the small-image recipe); "inception": a random crop of 8 % to 100 % of the area with aspect
    ratio 3/4 to 4/3, resized to (h, w), then flip — the official ProxylessNAS ImageNet recipe
    (torchvision's RandomResizedCrop + RandomHorizontalFlip)."""
    import tensorflow as tf

    if augment not in AUGMENTS:
        raise ValueError(f"unknown augment {augment!r}: one of {AUGMENTS}")
    h, w = _size(size_hw)
    c = image_u8.shape[-1]
    if augment == "none":
        return fit_image(image_u8, (h, w))
    s_crop, s_flip = _seeds(seed, 2)
    if augment == "inception":
        shape = tf.shape(image_u8)
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape, bounding_boxes=tf.zeros([1, 0, 4], tf.float32), seed=s_crop, area_range=INCEPTION_SCALE,
            aspect_ratio_range=INCEPTION_RATIO, max_attempts=10, use_image_if_no_bounding_boxes=True)
        crop = tf.slice(image_u8, begin, size)
        x = tf.clip_by_value(tf.image.resize(tf.cast(crop, tf.float32), (h, w), antialias=True), 0.0, 255.0)
        x = tf.ensure_shape(x, (h, w, c))
    else:
        x = fit_image(image_u8, (h, w))
        if augment == "crop_flip":
            p = int(pad) if pad is not None else max(1, h // 8)
            x = tf.pad(x, [[p, p], [p, p], [0, 0]])
            x = tf.image.stateless_random_crop(x, (h, w, c), seed=s_crop)
    return tf.image.stateless_random_flip_left_right(x, s_flip)


def normalize(x, mean, std):
    """(x / 255 - mean) / std per channel: the one formula (the `Normalize` layer uses it too)."""
    import tensorflow as tf

    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    return (tf.cast(x, tf.float32) / 255.0 - mean) / std


def search_styles(image_shape):
    """(train augment, eval style) the search uses for stored images of `image_shape`.

    Variable-size images (ImageNet, a folder of photos) get the ImageNet views; fixed-size colour
    images a flip (CIFAR); fixed-size grayscale ones nothing (Fashion-MNIST, digits: a flip would
    mirror the glyphs). The same rule as the search always had for its known datasets."""
    h, _, c = image_shape
    if h is None:
        return "inception", "imagenet"
    return ("flip" if c == 3 else "none"), "small"
