"""Image dimensions from a file's header, read before anything is decoded.

A 1 MB PNG can declare 32000x32000 pixels (3 GB once decoded, 20 s of work), so the size is checked
against a pixel limit first. PNG, JPEG, BMP, GIF and WebP headers are parsed here, in a few bytes each;
for other formats `read_header` returns None and OpenCV's own guard applies, the
`OPENCV_IO_MAX_IMAGE_PIXELS` environment variable, whose default `import keras_cam` sets (OpenCV reads it
once, when cv2 is first imported).
"""
from __future__ import annotations

import os
import struct
import zlib
from typing import BinaryIO, NamedTuple, Optional, Union

import cv2
import numpy as np

__all__ = ["DEFAULT_MAX_PIXELS", "ImageFileError", "ImageHeader", "check_image_file", "check_max_pixels",
           "read_header"]

#: Pillow's DecompressionBombError threshold (2 x its 89,478,485-pixel warning): about 13,400 x 13,400.
DEFAULT_MAX_PIXELS = 178_956_970

PathLike = Union[str, "os.PathLike[str]"]

_PNG = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers (baseline, extended, progressive, lossless, arithmetic): all but DHT (C4), JPG
# (C8) and DAC (CC) in C0-CF.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM and the restart markers (SOI is consumed first).
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])


class ImageHeader(NamedTuple):
    """What a file's header declares: its format ("png", "jpeg", "bmp", "gif" or "webp") and size."""

    format: str
    height: int
    width: int

    @property
    def pixels(self) -> int:
        return self.height * self.width


class ImageFileError(ValueError):
    """An image file that cannot be read, or is refused (above the pixel limit): `path`, and `reason`
    without the path (for lists such as the command line's `skipped PATH: reason`)."""

    def __init__(self, path: PathLike, reason: str, message: Optional[str] = None) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(message or f"Cannot read the image '{self.path}': {reason}.")


class _Corrupt(Exception):
    """A header that is truncated or does not follow its format."""


def _read(f: BinaryIO, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _Corrupt(f"truncated {what} header")
    return data


def _png(f: BinaryIO) -> ImageHeader:
    chunk = _read(f, 33, "PNG")  # signature, IHDR length and type, its 13 bytes, its CRC
    length, kind = struct.unpack(">I4s", chunk[8:16])
    if length != 13 or kind != b"IHDR":
        raise _Corrupt("corrupt PNG header (the first chunk is not IHDR)")
    if zlib.crc32(chunk[12:29]) != struct.unpack(">I", chunk[29:33])[0]:
        raise _Corrupt("corrupt PNG header (IHDR checksum mismatch)")
    width, height = struct.unpack(">II", chunk[16:24])
    return ImageHeader("png", height, width)


def _to_marker(f: BinaryIO) -> bool:
    """Moves past the next 0xFF (stray bytes between segments are skipped, as libjpeg does); False at EOF."""
    while True:
        chunk = f.read(65536)
        if not chunk:
            return False
        found = chunk.find(b"\xff")
        if found >= 0:
            f.seek(found + 1 - len(chunk), os.SEEK_CUR)
            return True


def _jpeg(f: BinaryIO) -> Optional[ImageHeader]:
    _read(f, 2, "JPEG")  # SOI
    while True:
        byte = f.read(1) if _to_marker(f) else b""
        while byte == b"\xff":  # fill bytes
            byte = f.read(1)
        if not byte:
            raise _Corrupt("truncated JPEG (no frame header)")
        marker = byte[0]
        if marker == 0 or marker in _JPEG_STANDALONE:  # FF 00: a stuffed zero, not a marker
            continue
        if marker in (0xD9, 0xDA):  # end of image, or the scan data, before any frame header
            raise _Corrupt("corrupt JPEG (no frame header before the image data)")
        (length,) = struct.unpack(">H", _read(f, 2, "JPEG segment"))
        if length < 2:
            raise _Corrupt("corrupt JPEG (a segment length below 2)")
        if marker in _JPEG_SOF:
            _, height, width = struct.unpack(">BHH", _read(f, 5, "JPEG frame"))
            # Height 0: set later by a DNL marker, after the scan; OpenCV's own guard decides then.
            return ImageHeader("jpeg", height, width) if height else None
        f.seek(length - 2, os.SEEK_CUR)


def _bmp(f: BinaryIO) -> ImageHeader:
    head = _read(f, 18, "BMP")
    (dib,) = struct.unpack("<I", head[14:18])
    if dib == 12:  # OS/2 1.x BITMAPCOREHEADER: unsigned 16-bit sizes
        width, height = struct.unpack("<HH", _read(f, 4, "BMP"))
    elif dib >= 16:  # BITMAPINFOHEADER and its successors: signed 32-bit, a negative height is top-down
        width, height = struct.unpack("<ii", _read(f, 8, "BMP"))
        if width < 0:
            raise _Corrupt(f"corrupt BMP header (width {width})")
        height = abs(height)
    else:
        raise _Corrupt(f"corrupt BMP header (info header of {dib} bytes)")
    return ImageHeader("bmp", height, width)


def _gif(f: BinaryIO) -> ImageHeader:
    width, height = struct.unpack("<HH", _read(f, 10, "GIF")[6:10])  # the logical screen
    return ImageHeader("gif", height, width)


def _webp(f: BinaryIO) -> ImageHeader:
    head = _read(f, 20, "WebP")  # RIFF, size, WEBP, then the first chunk's type and size
    kind = head[12:16]
    if kind == b"VP8 ":  # lossy: a key frame's tag, start code, then 14-bit sizes (2 bits of scaling)
        data = _read(f, 10, "WebP VP8")
        if data[0] & 1 or data[3:6] != b"\x9d\x01\x2a":
            raise _Corrupt("corrupt WebP header (no VP8 key frame)")
        width, height = (v & 0x3FFF for v in struct.unpack("<HH", data[6:10]))
    elif kind == b"VP8L":  # lossless: signature 0x2F, then 14 bits each of width - 1 and height - 1
        data = _read(f, 5, "WebP VP8L")
        if data[0] != 0x2F:
            raise _Corrupt("corrupt WebP header (bad VP8L signature)")
        (bits,) = struct.unpack("<I", data[1:5])
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif kind == b"VP8X":  # extended: flags, 3 reserved bytes, 24 bits each of canvas width - 1, height - 1
        data = _read(f, 10, "WebP VP8X")
        width = int.from_bytes(data[4:7], "little") + 1
        height = int.from_bytes(data[7:10], "little") + 1
    else:
        raise _Corrupt(f"corrupt WebP header (unknown first chunk {kind!r})")
    return ImageHeader("webp", height, width)


def read_header(file: Union[PathLike, BinaryIO]) -> Optional[ImageHeader]:
    """The format and size an image file declares, from its first bytes (nothing is decoded).

    Args:
        file: a path, or a binary file object positioned at the image's start (it is read and seeked).

    Returns:
        An `ImageHeader` for PNG, JPEG, BMP, GIF and WebP files; None for other formats (and for a JPEG
        whose height is only given after its image data).

    Raises:
        ValueError: the file starts like one of those formats but its header is truncated or corrupt, or
            declares an empty image.
        OSError: the file cannot be opened or read.

    Example:

    >>> import io, cv2, numpy as np
    >>> from keras_cam.visualize import read_header
    >>> ok, png = cv2.imencode(".png", np.zeros((5, 7, 3), np.uint8))
    >>> read_header(io.BytesIO(png.tobytes()))
    ImageHeader(format='png', height=5, width=7)
    """
    if not hasattr(file, "read"):
        with open(os.fspath(file), "rb") as f:
            return read_header(f)
    f = file  # type: ignore[assignment]
    start = f.tell()
    magic = f.read(12)
    f.seek(start)
    if magic.startswith(_PNG):
        reader = _png
    elif magic.startswith(b"\xff\xd8\xff"):
        reader = _jpeg
    elif magic.startswith(b"BM"):
        reader = _bmp
    elif magic[:6] in (b"GIF87a", b"GIF89a"):
        reader = _gif
    elif magic[:4] == b"RIFF" and magic[8:12] == b"WEBP":
        reader = _webp
    else:
        return None
    try:
        header = reader(f)
    except _Corrupt as e:
        raise ValueError(str(e)) from None
    finally:
        f.seek(start)
    if header is not None and (header.width < 1 or header.height < 1):
        raise ValueError(f"corrupt {header.format.upper()} header (it declares a "
                         f"{header.width}x{header.height} image)")
    return header


def check_max_pixels(max_pixels: Optional[int]) -> None:
    """Raises a ValueError unless `max_pixels` is a positive integer or None."""
    integer = isinstance(max_pixels, (int, np.integer)) and not isinstance(max_pixels, bool)
    if max_pixels is not None and not (integer and max_pixels >= 1):
        raise ValueError(f"`max_pixels` must be a positive integer or None, got {max_pixels!r}.")


def check_image_file(path: PathLike, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
                     option: str = "max_pixels") -> Optional[ImageHeader]:
    """Checks that `path` is a readable image within the pixel limit, from its header alone.

    Args:
        path: the image file.
        max_pixels: the most pixels (height x width) accepted; None for no limit of ours (OpenCV's
            `OPENCV_IO_MAX_IMAGE_PIXELS` still applies).
        option: how the limit is named in the message (e.g. "--max-pixels" on the command line).

    Returns:
        The `ImageHeader`, or None for a format whose header is not read here but that OpenCV recognizes.

    Raises:
        ImageFileError: a `ValueError` naming the file and the problem: it does not exist, cannot be read,
            is not an image OpenCV recognizes, has a corrupt header, or is larger than `max_pixels`.
    """
    check_max_pixels(max_pixels)
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise ImageFileError(name, "does not exist (or is not a file)",
                             f"Image file '{name}' does not exist (or is not a file).")
    try:
        empty = os.path.getsize(name) == 0
        header = None if empty else read_header(name)
    except OSError as e:
        raise ImageFileError(name, f"cannot be read ({e.strerror or e})") from None
    except ValueError as e:
        raise ImageFileError(name, str(e), f"Cannot decode '{name}' as an image: {e}.") from None
    if empty:
        raise ImageFileError(name, "the file is empty",
                             f"Cannot decode '{name}' as an image: the file is empty.")
    if header is None:
        # Other formats: OpenCV looks at the signature (a path OpenCV cannot open, e.g. non-ASCII names on
        # Windows, is left to the decoder).
        if name.isascii() and not cv2.haveImageReader(name):
            raise ImageFileError(name, "not an image format OpenCV can read",
                                 f"Cannot decode '{name}' as an image (unsupported format or corrupt file).")
        return None
    if max_pixels is not None and header.pixels > max_pixels:
        reason = (f"{header.width}x{header.height} = {header.pixels:,} pixels, above the limit of "
                  f"{max_pixels:,} ({option}); raise {option} if you trust the file")
        raise ImageFileError(name, reason, f"The image '{name}' has {reason}.")
    return header
