"""What an image file is, from its first and last bytes: format, size, channels, complete or not.

An image folder is checked before TensorFlow loads and before a single image is decoded:
reading the header and the tail of every file costs two small reads, finds the files a
broken copy truncated (a PNG without its IEND chunk, a JPEG without its end marker, a GIF
without its trailer, a BMP shorter than it declares), empty files and files that are not
images, and gives the size and channel count the dataset needs (one size or many; grayscale
or colour) without decoding anything. A file that passes can still be damaged inside its
compressed data; the decoder meets that later (see `folder.py`).
"""

import dataclasses
import os
import struct

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
HEAD_BYTES = 1 << 16       # a JPEG's frame header follows its EXIF/ICC segments, within 64 KB in practice,
LONG_HEAD_BYTES = 1 << 22  # and else within the first 4 MB (large embedded profiles and thumbnails)
TAIL_BYTES = 1 << 12       # JPEG writers may pad after the end marker
MAX_PIXELS = 1 << 26       # 67 M pixels (8192 x 8192): a larger "image" is a decompression bomb, not a photo
PNG_SIG = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC)
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    format: str
    height: int
    width: int
    channels: int  # 1 (grayscale) or 3 (colour; alpha is dropped when decoded)


class BadImage(Exception):
    """A file the folder reader skips; the message is the reason shown to the user."""


def is_image_name(name):
    return name.lower().endswith(EXTENSIONS) and not name.startswith(".")


def _png(head, tail, size):
    if len(head) < 33 or head[12:16] != b"IHDR":
        raise BadImage("truncated PNG header")
    width, height = struct.unpack(">II", head[16:24])
    color = head[25]
    if b"IEND" not in tail[-12:]:
        raise BadImage("truncated PNG (no IEND chunk at the end)")
    return "png", height, width, 1 if color in (0, 4) else 3


def _jpeg(head, tail, size):
    i = 2
    while i + 4 <= len(head):
        if head[i] != 0xFF:
            raise BadImage("corrupt JPEG header")
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker in (0xD9, 0xDA):
            break
        (length,) = struct.unpack(">H", head[i + 2:i + 4])
        if marker in SOF_MARKERS:
            if i + 10 > len(head):
                break
            height, width = struct.unpack(">HH", head[i + 5:i + 9])
            components = head[i + 9]
            if b"\xff\xd9" not in tail:
                raise BadImage("truncated JPEG (no end-of-image marker)")
            return "jpeg", height, width, 1 if components == 1 else 3
        i += 2 + length
    raise BadImage("truncated or corrupt JPEG header (no frame header)")


def _gif(head, tail, size):
    if len(head) < 10:
        raise BadImage("truncated GIF header")
    width, height = struct.unpack("<HH", head[6:10])
    if not tail.rstrip(b"\x00").endswith(b";"):
        raise BadImage("truncated GIF (no trailer byte)")
    return "gif", height, width, 3


def _bmp(head, tail, size):
    if len(head) < 30:
        raise BadImage("truncated BMP header")
    (declared,) = struct.unpack("<I", head[2:6])
    width, height = struct.unpack("<ii", head[18:26])
    if declared > size:
        raise BadImage(f"truncated BMP ({size} of the {declared} bytes it declares)")
    return "bmp", abs(height), width, 3


def probe(path):
    """ImageInfo of the file at `path`, or BadImage saying why it cannot be used."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise BadImage("empty file")
            head = f.read(HEAD_BYTES)
            if size > HEAD_BYTES:
                f.seek(max(size - TAIL_BYTES, 0))
                tail = f.read(TAIL_BYTES)
                if head.startswith(b"\xff\xd8"):
                    try:
                        _jpeg(head, tail, size)
                    except BadImage:  # the frame header may lie beyond the first 64 KB
                        f.seek(0)
                        head = f.read(LONG_HEAD_BYTES)
            else:
                tail = head[-TAIL_BYTES:]
    except OSError as e:
        raise BadImage(f"cannot be read ({e.strerror})") from None
    if head.startswith(PNG_SIG):
        parse = _png
    elif head.startswith(b"\xff\xd8"):
        parse = _jpeg
    elif head[:6] in (b"GIF87a", b"GIF89a"):
        parse = _gif
    elif head.startswith(b"BM"):
        parse = _bmp
    else:
        raise BadImage("not a PNG, JPEG, GIF or BMP image")
    fmt, height, width, channels = parse(head, tail, size)
    if height < 1 or width < 1:
        raise BadImage(f"{fmt.upper()} of size {width}x{height}")
    if height * width > MAX_PIXELS:
        raise BadImage(f"{width}x{height} pixels, more than the {MAX_PIXELS:,} an image may have")
    return ImageInfo(fmt, height, width, channels)
