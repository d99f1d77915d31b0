"""Image files damaged inside their compressed data: skipped, counted and named, never a traceback.

`image_files.probe` finds the files broken at their start or end before anything is decoded; a
file damaged in its middle (header and end intact, corrupt data between) is found only by the
decoder. TF's decoders raise on it, and an error in a tf.data map ends the whole iteration (a
traceback in the middle of training), while `ignore_errors` drops the image without a word.

`decode_checked` turns the error into a flag instead: the decode runs in a one-element dataset
with `ignore_errors`, a placeholder image follows it, and the first element of the two is
(image, ok). The pipelines drop the flagged images with `drop_flagged` (a `filter`), so the
decoding stays in their parallel map. Each refused file's path goes into a `Tally`, a TF hash
table used as a set (a file met in every epoch counts once), which `report` turns into one
`note:` line at the end of a run.
"""


class Tally:
    """The paths of the files a decoder refused, in a `MutableHashTable` that tf.data functions
    update from their threads (the table locks itself)."""

    def __init__(self):
        self._table = None

    def _get(self):
        import tensorflow as tf

        if self._table is None:
            with tf.init_scope():  # made eagerly, once, even when first needed while a map is traced
                self._table = tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, default_value=0)
        return self._table

    def record(self, path):
        """(Inside a tf.data function) add `path`; returns a False flag that depends on the insert."""
        import tensorflow as tf

        insert = self._get().insert(tf.reshape(path, [1]), tf.ones([1], tf.int64))
        with tf.control_dependencies([insert] if insert is not None else []):
            return tf.identity(tf.constant(False))

    def paths(self):
        """The refused files so far, sorted."""
        if self._table is None:
            return []
        keys, _ = self._table.export()
        return sorted(k.decode("utf-8", "replace") for k in keys.numpy().tolist())


def decode_checked(decode, item, placeholder_shape, tally):
    """(image, ok) of `decode(item)` for use inside a tf.data map: ok is False, the image a zero
    placeholder of `placeholder_shape` and `item` (a path) recorded in `tally`, when decoding fails."""
    import tensorflow as tf

    good = tf.data.Dataset.from_tensors(item).map(lambda it: (decode(it), tf.constant(True))).ignore_errors()
    bad = tf.data.Dataset.from_tensors((tf.zeros(placeholder_shape, tf.uint8), tf.constant(False)))
    image, ok = good.concatenate(bad).take(1).get_single_element()
    ok = tf.cond(ok, lambda: tf.constant(True), lambda: tally.record(item))
    return image, ok


def always_ok(image):
    """(image, True): the `decode_checked` of a source whose items are images or cannot fail."""
    import tensorflow as tf

    return image, tf.constant(True)


def drop_flagged(ds):
    """`ds` of (..., ok) tuples without the elements whose ok is False, and without the flag."""
    return ds.filter(lambda *e: e[-1]).map(lambda *e: e[0] if len(e) == 2 else tuple(e[:-1]))


def note(root, paths, when):
    """The one line that reports `paths` (the files of `root` the decoder refused), or None."""
    if not paths:
        return None
    return (f"note: {root}: {len(paths)} image file(s) could not be decoded {when} and were skipped "
            f"(damaged inside their data): first one {paths[0]}")


def report(source):
    """Print the note of the files `source`'s stream skipped so far (nothing when there are none);
    returns how many."""
    paths = source.damaged_files()
    line = note(source.name, paths, "while streaming")
    if line:
        print(line, flush=True)
    return len(paths)
