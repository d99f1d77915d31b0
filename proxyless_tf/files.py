"""Reading and writing the project's small files (spaces, archs, tables, configs, summaries):
reads fail with one `ConfigError` line instead of a traceback (readers.py), writes are atomic
so a killed process never leaves half a file."""

import json
import os

from proxyless_tf.errors import ConfigError
# Reads go through readers.py (regular files only, size caps, JSON limits); re-exported here
# because every caller has always read its JSON through files.read_json.
from proxyless_tf.readers import MAX_JSON_BYTES, read_json, read_json_object  # noqa: F401


def check_output_path(path, field="--out"):
    """Fail before any work if `path` cannot be written: it is a directory, or a parent is a file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ConfigError(path, field, "is a directory", "pass a file name inside it")
    d = _existing_parent_dir(path, field)
    if not os.access(d, os.W_OK):
        raise ConfigError(path, field, f"{d} is not writable", "pass a path in a writable directory")


def _existing_parent_dir(path, field):
    """The first existing ancestor of `path`, refused (one line) when it is a file, not a directory."""
    d = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(d):
        d = os.path.dirname(d)
    if not os.path.isdir(d):
        raise ConfigError(path, field, f"{d} is a file, not a directory", "pass a path inside a directory")
    return d


def check_output_dir(path, field="--out_dir"):
    """Fail before any work if run directory `path` cannot be made: a regular file is there, a parent
    is a file, or the first existing parent is not writable. Creates nothing."""
    path = os.fspath(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ConfigError(path, field, "is a file, not a directory", "pass a directory path")
    d = _existing_parent_dir(path, field)
    if not os.access(path if os.path.isdir(path) else d, os.W_OK):
        raise ConfigError(path, field, "is not writable", "pass a path in a writable directory")


def write_bytes_atomic(path, content):
    """Write bytes to a temporary file beside `path` and rename it: readers (and a rerun) see the
    old file or the whole new one, never half of one, even when the process is killed mid-write."""
    path = os.fspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise ConfigError(path, "<file>", f"cannot be written ({e.strerror})",
                          "check the directory exists and is writable") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path, obj):
    """Write JSON to a temporary file and rename it, so a crash never leaves half a file."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def write_text_atomic(path, text):
    """write_bytes_atomic for UTF-8 text (summaries, reports)."""
    write_bytes_atomic(path, text.encode("utf-8"))
