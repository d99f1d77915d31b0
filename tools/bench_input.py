"""How many CPU cores the ImageNet-style input pipeline needs to feed one training step.

    python tools/bench_input.py [--arch=proxyless_mobile.json --train_batch=32 --threads=1,2]

Times, in one process and one run:
  1. the training input pipeline of a streamed image folder (read the file, decode the JPEG
     with the folder reader's checked decode, which drops and counts a file damaged inside
     (`data.damaged`; `--decode=plain` times the bare decode, `--decode=checked,plain` both),
     random-resized crop + flip to the network's input size (preprocess.train_transform,
     "inception"), normalise; batched and prefetched), with its map and tf.data's private
     thread pool limited to 1, then 2, threads. It prints images/s, the CPU cores the process
     kept busy, and images per CPU-second ("per core": the images/s one core delivers);
  2. one training step of the network (`model.fit`'s step: SGD Nesterov with the retraining
     recipe's weight decay and label smoothing, the CPU kernels `proxyless_tf.train` uses) on
     random inputs of its size, as images/s;
and prints their ratio: the cores needed to feed that step.

The images: `--images=DIR` (its JPEG files, any depth), or, by default, JPEGs written to a
temporary folder from a real photograph (random crops of matplotlib's sample picture
grace_hopper.jpg, resized to `--jpeg_size`, ImageNet's most common size 500x375 by default),
or `--source=fashion_mnist` (Fashion-MNIST images upscaled to `--jpeg_size`, RGB). Every file is
decoded once before timing, so a bad file is one error line and the page cache is warm: the
numbers are decoding and augmentation, not the disk.
"""

import os
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from proxyless_tf import cli  # noqa: E402
from proxyless_tf.errors import ConfigError  # noqa: E402

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
JPEG_EXTENSIONS = (".jpg", ".jpeg")
SOURCES = ("photo", "fashion_mnist")
DECODES = ("checked", "plain")

FLAGS = flags.FLAGS
flags.DEFINE_string("arch", "proxyless_mobile.json", "Network whose training step is fed (a name resolves in "
                    "configs/archs); its input size is the pipeline's output size.")
flags.DEFINE_integer("num_classes", 1000, "Classes of the network's head.")
flags.DEFINE_integer("train_batch", 32, "Batch of the training step.")
flags.DEFINE_integer("train_steps", 5, "Timed training steps (after 2 warm-up steps); the median is used.")
flags.DEFINE_string("images", None, "Folder of JPEG files to read (default: make --num_images from --source).")
flags.DEFINE_enum("source", "photo", SOURCES, "Images made when --images is not given.")
flags.DEFINE_string("data_dir", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST IDX files (--source=fashion_mnist).")
flags.DEFINE_integer("num_images", 256, "JPEG files used (the first ones of --images, sorted by path).")
flags.DEFINE_string("jpeg_size", "500x375", "WIDTHxHEIGHT of the JPEGs made when --images is not given.")
flags.DEFINE_integer("batch", 32, "Batch of the input pipeline.")
flags.DEFINE_integer("pipeline_images", 1536, "Images timed per thread setting (after 2 warm-up batches).")
flags.DEFINE_list("threads", ["1", "2"], "Thread settings of the input pipeline (parallel calls = pool size).")
flags.DEFINE_list("decode", ["checked"], "Decodes timed: checked (the folder reader's: a damaged file is dropped "
                  "and counted) and/or plain (tf.io.decode_image alone).")
flags.DEFINE_integer("seed", 0, "Seed of the made images and the augmentation.")


# ---- the images -------------------------------------------------------------------------------------

def parse_size(text):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        w = h = 0
    if not (16 <= w <= 4096 and 16 <= h <= 4096):
        raise ConfigError("<flags>", "--jpeg_size", f"{text!r} is not WIDTHxHEIGHT between 16 and 4096",
                          "e.g. --jpeg_size=500x375")
    return w, h


def sample_photo_path():
    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    if not os.path.isfile(path):
        raise ConfigError(path, "--source", "matplotlib's sample photograph is missing",
                          "pass --images=DIR with JPEG files, or --source=fashion_mnist")
    return path


def made_images(source, n, size_wh, seed, data_dir):
    """n uint8 HxWx3 images of size_wh: crops of a real photograph, or upscaled Fashion-MNIST."""
    import numpy as np
    import tensorflow as tf

    w, h = size_wh
    rng = np.random.default_rng(seed)
    if source == "photo":
        base = tf.io.decode_jpeg(tf.io.read_file(sample_photo_path()), channels=3)
        bh, bw = int(base.shape[0]), int(base.shape[1])
        for _ in range(n):
            # a crop of the output's aspect ratio, 50-100 % of the largest that fits, then resized
            full = min(bw, bh * w / h)
            cw = max(8, int(full * rng.uniform(0.5, 1.0)))
            ch = max(8, min(bh, int(cw * h / w)))
            top, left = int(rng.integers(0, bh - ch + 1)), int(rng.integers(0, bw - cw + 1))
            crop = base[top:top + ch, left:left + cw]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            yield tf.cast(tf.clip_by_value(tf.round(tf.image.resize(crop, (h, w), antialias=True)), 0, 255), tf.uint8)
    else:
        from proxyless_tf.data import idx

        local = idx.find_fashion_dir(data_dir)
        if not local:
            raise ConfigError(data_dir, "--data_dir", "has no Fashion-MNIST IDX files",
                              "install dataset-fashion-mnist, or pass --source=photo")
        x, _ = idx.load_fashion_local(local)
        for i in rng.choice(len(x), n, replace=False):
            yield tf.cast(tf.round(tf.image.resize(tf.image.grayscale_to_rgb(tf.constant(x[i])), (h, w))), tf.uint8)


def write_jpegs(directory, images):
    """JPEG files (quality 90) in two class folders, as an image-folder dataset holds them."""
    import tensorflow as tf

    paths = []
    for i, image in enumerate(images):
        path = os.path.join(directory, f"class_{i % 2}", f"{i:05d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tf.io.write_file(path, tf.io.encode_jpeg(image, quality=90))
        paths.append(path)
    return paths


def find_jpegs(directory, limit):
    if not os.path.isdir(directory):
        raise ConfigError(directory, "--images", "is not a directory", "pass a folder of .jpg files")
    found = sorted(os.path.join(d, f) for d, _, fs in os.walk(directory) for f in fs
                   if f.lower().endswith(JPEG_EXTENSIONS))
    if not found:
        raise ConfigError(directory, "--images", "holds no .jpg/.jpeg files", "pass a folder of JPEG files")
    return found[:limit]


def check_decodable(paths, channels):
    """Decode every file once: a bad file is one line here, not an exception in the timed loop."""
    import tensorflow as tf

    for p in paths:
        try:
            tf.io.decode_image(tf.io.read_file(p), channels=channels, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
            first = (e.message or type(e).__name__).splitlines()[0][:120]
            raise ConfigError(p, "<file>", f"cannot be decoded ({first})", "remove it or pass another --images") from None


# ---- the timings ------------------------------------------------------------------------------------

def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def input_pipeline(paths, size_hw, channels, batch, threads, seed, decode="checked"):
    """The streamed training pipeline of an image folder (its reader's decode), limited to
    `threads` threads."""
    import numpy as np
    import tensorflow as tf

    from proxyless_tf.data import damaged, preprocess
    from proxyless_tf.data.folder import FolderReader

    reader = FolderReader({"train": (paths, np.zeros(len(paths), np.int64))}, channels, None)
    decode_fn = reader.decode_checked if decode == "checked" else lambda p: damaged.always_ok(reader.decode(p))

    def load(index, path):
        image, ok = decode_fn(path)
        x = preprocess.train_transform(image, size_hw, "inception", tf.stack([tf.constant(seed, tf.int64), index]))
        return preprocess.normalize(x, IMAGENET_MEAN[:channels], IMAGENET_STD[:channels]), ok

    ds = (damaged.drop_flagged(tf.data.Dataset.from_tensor_slices(paths).repeat().enumerate()
                               .map(load, num_parallel_calls=threads, deterministic=True))
          .batch(batch, drop_remainder=True).prefetch(2))
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)


def time_pipeline(ds, batches):
    """(images/s, CPU cores busy, images per CPU-second) over `batches` batches after 2 warm-up ones."""
    it = iter(ds)
    batch = None
    for _ in range(2):
        batch = next(it)
    n = int(batch.shape[0]) * batches
    wall, cpu = time.perf_counter(), cpu_seconds()
    for _ in range(batches):
        next(it)
    wall, cpu = time.perf_counter() - wall, max(cpu_seconds() - cpu, 1e-6)
    return n / wall, cpu / wall, n / cpu


def time_train_step(arch, num_classes, batch, steps, seed):
    """(median ms per step, images/s) of the retraining step on random inputs of the arch's size."""
    import keras
    import numpy as np

    from proxyless_tf.layers import cpu_kernels
    from proxyless_tf.models.nets import build_model
    from proxyless_tf.training import recipe
    from proxyless_tf.training.config import TrainConfig

    keras.utils.set_random_seed(seed)
    cfg = TrainConfig(batch_size=batch)
    model = build_model(arch, num_classes, dropout=cfg.dropout)
    cpu_kernels.accelerate(model)
    recipe.compile_model(model, cfg, steps_per_epoch=1000)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *arch.space.input_shape)).astype("float32")
    y = np.eye(num_classes, dtype="float32")[rng.integers(0, num_classes, batch)]
    for _ in range(2):
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - t)
    ms = float(np.median(times)) * 1000
    return ms, batch / ms * 1000


# ---- main -----------------------------------------------------------------------------------------

def check_flags():
    for name in ("num_classes", "train_batch", "train_steps", "num_images", "batch", "pipeline_images"):
        if getattr(FLAGS, name) < 1:
            raise ConfigError("<flags>", f"--{name}", f"must be at least 1, got {getattr(FLAGS, name)}",
                              f"pass a positive --{name}")
    if FLAGS.num_classes < 2:
        raise ConfigError("<flags>", "--num_classes", "must be at least 2", "pass the head's number of classes")
    try:
        threads = [int(t) for t in FLAGS.threads]
    except ValueError:
        threads = []
    if not threads or min(threads) < 1:
        raise ConfigError("<flags>", "--threads", f"{FLAGS.threads} is not a list of positive integers",
                          "e.g. --threads=1,2")
    if not FLAGS.decode or any(d not in DECODES for d in FLAGS.decode):
        raise ConfigError("<flags>", "--decode", f"{FLAGS.decode} is not a list of {' and '.join(DECODES)}",
                          "e.g. --decode=checked,plain")
    return threads


def main(argv):
    from proxyless_tf import messages
    from proxyless_tf.space import Arch

    threads = check_flags()
    size_wh = parse_size(FLAGS.jpeg_size)
    arch_path = cli.resolve_path(FLAGS.arch, "archs")
    arch = Arch.from_json(arch_path)
    h, w, c = arch.space.input_shape
    batches = max(1, FLAGS.pipeline_images // FLAGS.batch)
    made = None
    try:
        if FLAGS.images:
            paths = find_jpegs(os.path.expanduser(FLAGS.images), FLAGS.num_images)
            what = f"{len(paths)} JPEG files of {messages.shown_path(FLAGS.images)}"
        else:
            made = tempfile.mkdtemp(prefix="bench_input_")
            paths = write_jpegs(made, made_images(FLAGS.source, FLAGS.num_images, size_wh, FLAGS.seed,
                                                  FLAGS.data_dir))
            origin = ("crops of a photograph (matplotlib's grace_hopper.jpg)" if FLAGS.source == "photo"
                      else "Fashion-MNIST upscaled to RGB")
            what = f"{len(paths)} JPEG files {size_wh[0]}x{size_wh[1]}, quality 90, {origin}"
        check_decodable(paths, c)
        kb = sum(os.path.getsize(p) for p in paths) / len(paths) / 1024
        print(f"input: {what}, {kb:.0f} KB on average; {os.cpu_count()} CPUs")
        print(f"pipeline: read, decode, random-resized crop + flip to {h}x{w}x{c}, normalise; batch {FLAGS.batch}, "
              f"{batches * FLAGS.batch} images timed per setting")
        per_core = None
        for decode in FLAGS.decode:
            for n in threads:
                ips, busy, per_core = time_pipeline(
                    input_pipeline(paths, (h, w), c, FLAGS.batch, n, FLAGS.seed, decode), batches)
                print(f"  {n} parallel call(s){f', {decode} decode' if len(FLAGS.decode) > 1 else ''}: "
                      f"{ips:8.1f} images/s  {busy:5.2f} CPU cores busy  {per_core:8.1f} images/s per core", flush=True)
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)
    ms, step_ips = time_train_step(arch, FLAGS.num_classes, FLAGS.train_batch, FLAGS.train_steps, FLAGS.seed)
    print(f"training step: {messages.shown_path(arch_path)} at {h}x{w}x{c}, {FLAGS.num_classes} classes, batch "
          f"{FLAGS.train_batch}: {ms:.1f} ms/step = {step_ips:.1f} images/s on this machine's {os.cpu_count()} CPUs "
          f"(median of {FLAGS.train_steps} steps)")
    print(f"cores needed to feed one such step: {step_ips / per_core:.3f}  "
          f"(= {step_ips:.1f} / {per_core:.1f}, the per-core rate at {threads[-1]} parallel call(s))")


if __name__ == "__main__":
    cli.run(main)
