"""The one guarded way in for every file a command reads (JSON, YAML, flag files, IDX/gzip,
`.keras` archives, `.tflite`, checkpoints).

A user (or an attacker) can hand any command any path. Without bounds a named pipe hangs the
read, `/dev/zero` exhausts memory, a gzip or zip of a few kilobytes expands to gigabytes, a JSON
integer of 5000 digits or a nesting a thousand levels deep escapes as a traceback from deep in
the standard library. Every reader here checks the file before it touches its bytes (a regular
file, under a size cap), bounds what it decompresses, and parses with limits (nesting depth,
number length, duplicate keys refused), so every failure is one `ConfigError` line naming the
file, the field and the fix.
"""

import json
import os
import stat

from proxyless_tf.errors import ConfigError

MAX_JSON_BYTES = 64 << 20    # spaces, archs and latency tables are kilobytes; refuse to read a huge file
MAX_TEXT_BYTES = 16 << 20    # flag files, YAML tables
MAX_DEPTH = 32               # our JSON/YAML files nest 5 levels; a deeper one is not one of ours
MAX_NUMBER_CHARS = 40        # a JSON number longer than this is no width, latency or seed of ours


def check_regular(path, what="file", field="<file>", max_bytes=None, fix="check the path"):
    """`os.stat` of a regular file under `max_bytes`, or one line: missing, a directory, a pipe or
    device (whose read would hang or never end), or too big to be the file asked for."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(path, field, f"{what} does not exist", fix) from None
    except OSError as e:
        raise ConfigError(path, field, f"cannot be read ({e.strerror})", "check the path and its permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(path, field, f"is a directory, not a {what}", f"pass the {what} itself")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a named pipe" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise ConfigError(path, field, f"is {kind}, not a regular file", f"save the {what} to a file and pass that")
    if max_bytes is not None and st.st_size > max_bytes:
        raise ConfigError(path, field, f"{what} is {st.st_size} bytes, more than the {max_bytes} allowed",
                          "pass the right file (these files are kilobytes)" if max_bytes <= MAX_JSON_BYTES
                          else "pass the right file")
    return st


def open_regular(path, what="file", field="<file>", max_bytes=None, fix="check the path"):
    """A binary file object for a checked regular file; O_NONBLOCK so that a file swapped for a
    pipe between the check and the open still cannot hang the command."""
    path = os.fspath(path)
    check_regular(path, what, field, max_bytes, fix)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise ConfigError(path, field, "is not a regular file", f"save the {what} to a file and pass that")
        return os.fdopen(fd, "rb")
    except OSError as e:
        raise ConfigError(path, field, f"cannot be read ({e.strerror})", "check permissions") from None


def read_bytes(path, what="file", field="<file>", max_bytes=MAX_JSON_BYTES, fix="check the path"):
    """The bytes of a regular file of at most `max_bytes` (a file growing while read is cut at the cap)."""
    path = os.fspath(path)
    with open_regular(path, what, field, max_bytes, fix) as f:
        try:
            raw = f.read(max_bytes + 1)
        except OSError as e:
            raise ConfigError(path, field, f"cannot be read ({e.strerror})", "check permissions") from None
    if len(raw) > max_bytes:
        raise ConfigError(path, field, f"{what} is more than the {max_bytes} bytes allowed", "pass the right file")
    return raw


def read_text(path, what="file", field="<file>", max_bytes=MAX_TEXT_BYTES, fix="check the path",
              encoding_fix="save the file as UTF-8"):
    """UTF-8 text of a regular file (a BOM from a Windows editor is harmless)."""
    raw = read_bytes(path, what, field, max_bytes, fix)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(os.fspath(path), field, f"is not UTF-8 (byte {e.start})", encoding_fix) from None


# ---- JSON ------------------------------------------------------------------------------------------

class _Refused(Exception):
    """Raised inside the JSON parser's hooks; turned into a ConfigError with the file's name."""

    def __init__(self, field, problem, fix, needle=None):
        super().__init__(problem)
        self.field, self.problem, self.fix, self.needle = field, problem, fix, needle


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _Refused(f"key {k!r}", "appears twice in one object (JSON keeps only the last silently)",
                           "keep one of the two entries")
        out[k] = v
    return out


def _number(kind):
    def parse(s):
        if len(s) > MAX_NUMBER_CHARS:
            raise _Refused("<number>", f"{kind} of {len(s)} characters ({s[:12]}...)",
                           f"write numbers of at most {MAX_NUMBER_CHARS} characters", needle=s)
        return int(s) if kind == "integer" else float(s)
    return parse


def _depth(obj):
    """Nesting depth of parsed JSON, without recursion."""
    best, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list)):
            best = max(best, d)
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return best


def _line_col(text, needle):
    i = text.find(needle) if needle else -1
    if i < 0:
        return ""
    line = text.count("\n", 0, i) + 1
    return f"line {line} column {i - (text.rfind(chr(10), 0, i) + 1) + 1}: "


def parse_json(text, source, fix="fix the JSON or regenerate the file"):
    """JSON text -> object with the project's limits: strict grammar (no duplicate keys), numbers of
    at most MAX_NUMBER_CHARS characters, at most MAX_DEPTH levels of nesting."""
    if not text.strip():
        raise ConfigError(source, "<file>", "is empty", "regenerate or restore the file")
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_int=_number("integer"),
                         parse_float=_number("number"))
    except json.JSONDecodeError as e:
        raise ConfigError(source, f"line {e.lineno} column {e.colno}", f"malformed or truncated JSON ({e.msg})",
                          fix) from None
    except _Refused as e:
        raise ConfigError(source, f"{_line_col(text, e.needle)}{e.field}", e.problem, e.fix) from None
    except RecursionError:
        raise ConfigError(source, "<file>", "JSON nested too deeply", "pass a real file of this kind") from None
    except (ValueError, OverflowError) as e:  # the interpreter's own limits (int digits, ...)
        raise ConfigError(source, "<file>", f"JSON value out of range ({str(e)[:80]})", fix) from None
    if _depth(obj) > MAX_DEPTH:
        raise ConfigError(source, "<file>", f"JSON nested too deeply (more than {MAX_DEPTH} levels)",
                          "pass a real file of this kind")
    return obj


def read_json(path, what="file"):
    """A JSON file (regular, at most MAX_JSON_BYTES, UTF-8) parsed with `parse_json`'s limits."""
    path = os.fspath(path)
    text = read_text(path, what, max_bytes=MAX_JSON_BYTES, encoding_fix="save the file as UTF-8 JSON")
    return parse_json(text, path)


def read_json_object(path, what="file", fix="regenerate or restore the file"):
    """read_json for files whose top level must be an object (configs, states, results)."""
    obj = read_json(path, what)
    if not isinstance(obj, dict):
        raise ConfigError(os.fspath(path), "<top>", f"expected a JSON object, got {type(obj).__name__}", fix)
    return obj


# ---- YAML ------------------------------------------------------------------------------------------

def read_yaml(path, what="YAML file", fix="restore the file", max_bytes=MAX_TEXT_BYTES, missing_fix="check the path"):
    """YAML with the safe loader, no aliases (a few anchors can expand to billions of nodes) and at
    most MAX_DEPTH levels of nesting (PyYAML composes recursively)."""
    import yaml

    path = os.fspath(path)
    raw = read_bytes(path, what, max_bytes=max_bytes, fix=missing_fix)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(path, "<file>", f"cannot be read as YAML (not UTF-8: byte {e.start})", fix) from None

    class Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise _Refused(f"line {self.peek_event().start_mark.line + 1}", "YAML alias (*name) refused",
                               "write the values out")
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise _Refused(f"line {self.peek_event().start_mark.line + 1}",
                               f"YAML nested too deeply (more than {MAX_DEPTH} levels)", fix)
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)
    except _Refused as e:
        raise ConfigError(path, e.field, e.problem, e.fix) from None
    except RecursionError:
        raise ConfigError(path, "<file>", "YAML nested too deeply", fix) from None
    except yaml.YAMLError as e:
        raise ConfigError(path, "<file>", f"cannot be read as YAML ({str(e).splitlines()[0]})", fix) from None
    except (ValueError, OverflowError) as e:  # e.g. an integer past the interpreter's digit limit
        raise ConfigError(path, "<file>", f"cannot be read as YAML (value out of range: {str(e)[:80]})",
                          fix) from None


# ---- compressed files --------------------------------------------------------------------------------

def read_bounded(f, n, path, what):
    """At most `n` (decompressed) bytes from the open file `f`: a GzipFile never unpacks more than
    asked, so the caller bounds memory by what the file's header declares."""
    import gzip
    import zlib

    try:
        data = f.read(n)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        why = getattr(e, "strerror", None) or (str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise ConfigError(path, "<file>", f"cannot be read as {what} ({why})", "re-download the dataset") from None
    return data


MAX_ARCHIVE_BYTES = 2 << 30   # a .keras of ours is tens of MB unpacked; ImageNet-width networks stay far below
MAX_ARCHIVE_RATIO = 200       # float weights compress ~1.1x and JSON ~10x; hundreds-fold is a bomb
MAX_ARCHIVE_MEMBERS = 10000


def check_zip(path, what=".keras archive", fix="pass the .keras file saved by proxyless_tf.train"):
    """A zip archive whose declared sizes are sane, checked before anyone extracts it: a few MB
    that unpack to gigabytes (a zip bomb) is refused from its central directory alone."""
    import zipfile

    path = os.fspath(path)
    st = check_regular(path, what, max_bytes=MAX_ARCHIVE_BYTES, fix=fix)
    try:
        with open_regular(path, what) as f, zipfile.ZipFile(f) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise ConfigError(path, "<file>", f"is not a {what} (not a zip file: empty, truncated or another "
                          f"format; {str(e)[:60]})", fix) from None
    if len(infos) > MAX_ARCHIVE_MEMBERS:
        raise ConfigError(path, "<file>", f"{len(infos)} members, more than {MAX_ARCHIVE_MEMBERS}", fix)
    total = sum(i.file_size for i in infos)
    if total > MAX_ARCHIVE_BYTES:
        raise ConfigError(path, "<file>", f"unpacks to {total} bytes, more than the {MAX_ARCHIVE_BYTES} allowed "
                          "(a zip bomb?)", fix)
    for i in infos:
        if i.file_size > (1 << 20) and i.file_size > MAX_ARCHIVE_RATIO * max(i.compress_size, 1):
            raise ConfigError(path, i.filename, f"unpacks {i.compress_size} bytes to {i.file_size} (more than "
                              f"{MAX_ARCHIVE_RATIO}x: a zip bomb?)", fix)
    return st, infos


_H5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_h5(path, what="weights file", fix="delete the file and rerun"):
    """An HDF5 file that h5py can open: a truncated one (a killed copy, a full disk) is one line."""
    path = os.fspath(path)
    with open_regular(path, what, fix=fix) as f:
        head = f.read(8)
    if head != _H5_SIGNATURE:
        raise ConfigError(path, "<file>", f"is not an HDF5 {what} (empty, truncated or another format)", fix)
    try:
        import h5py

        with h5py.File(path, "r") as h:
            h.visit(lambda name: None)
    except Exception as e:  # h5py raises OSError, KeyError, RuntimeError... for damaged files
        raise ConfigError(path, "<file>", f"{what} is damaged ({type(e).__name__}: {str(e)[:80]})", fix) from None
