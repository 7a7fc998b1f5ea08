"""Reading images (visualize/images.py and visualize/headers.py): sizes read from the header before any
decoding, the pixel limit that refuses image bombs, and OpenCV's own limit for the other formats."""
import doctest
import io
import os
import struct
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

import keras_cam as kc
from keras_cam.visualize import headers
from tests.helpers import png_header


def _tiff_header(width, height):
    """A TIFF (no header reader of ours: OpenCV's own guard applies) declaring an 8-bit gray width x height
    image whose strip is missing."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 1 << 20), (278, 4, 1, height), (279, 4, 1, width * height)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\0" + struct.pack("<I", 8) + ifd


_FORMATS = [
    ("png", ".png", []), ("jpeg", ".jpg", []), ("jpeg", ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    ("bmp", ".bmp", []), ("gif", ".gif", []), ("webp", ".webp", []),  # lossless: a VP8L chunk
    ("webp", ".webp", [cv2.IMWRITE_WEBP_QUALITY, 90]),  # lossy: VP8 (with alpha below: VP8X)
]


@pytest.mark.parametrize("fmt, suffix, params", _FORMATS)
@pytest.mark.parametrize("channels", [3, 4])
def test_headers_give_the_size_opencv_decodes(tmp_path, fmt, suffix, params, channels):
    rng = np.random.default_rng(0)
    image = (rng.random((5, 7, channels)) * 255).astype(np.uint8)
    ok, encoded = cv2.imencode(suffix, image, params)
    assert ok
    data = encoded.tobytes()
    path = tmp_path / f"img{suffix}"
    path.write_bytes(data)
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    assert headers.read_header(path) == headers.ImageHeader(fmt, *decoded.shape[:2]) == (fmt, 5, 7)
    # Every prefix of the file: a truncated header is a ValueError (or not recognized yet), never a wrong
    # size nor another exception.
    for n in range(len(data)):
        try:
            header = headers.read_header(io.BytesIO(data[:n]))
        except ValueError as e:
            assert "truncated" in str(e), (n, e)
        else:
            assert header in (None, (fmt, 5, 7)), (n, header)
    # The limit holds for every format: 35 pixels pass a limit of 35 and not one of 34.
    assert kc.visualize.read_image(path, max_pixels=35).shape == (5, 7, 3)
    with pytest.raises(ValueError, match=r"7x5 = 35 pixels, above the limit of 34 \(max_pixels\)"):
        kc.visualize.read_image(path, max_pixels=34)


def test_corrupt_and_unknown_headers():
    png = png_header(7, 5)
    assert headers.read_header(io.BytesIO(png)) == ("png", 5, 7)
    cases = {
        png[:-1] + bytes([png[-1] ^ 1]): "IHDR checksum mismatch",
        png[:12] + b"IDAT" + png[16:]: "the first chunk is not IHDR",
        png_header(0, 5): r"declares a 0x5 image",
        b"\xff\xd8\xff\xda\x00\x02": "no frame header before the image data",  # scan data before any frame
        b"BM" + bytes(12) + struct.pack("<I", 8) + bytes(8): "info header of 8 bytes",
        b"RIFF\0\0\0\0WEBPVP9 \0\0\0\0": "unknown first chunk",
    }
    for data, message in cases.items():
        with pytest.raises(ValueError, match=message):
            headers.read_header(io.BytesIO(data))
    # Stray bytes between JPEG segments (here after SOI and the 16-byte APP0 segment), a stuffed zero among
    # them: decoders skip them, and so does the reader, quickly.
    ok, jpeg = cv2.imencode(".jpg", np.zeros((5, 7, 3), np.uint8))
    stray = jpeg.tobytes()[:20] + bytes(1 << 20) + b"\xff\x00" + bytes(9) + jpeg.tobytes()[20:]
    assert cv2.imdecode(np.frombuffer(stray, np.uint8), cv2.IMREAD_COLOR).shape == (5, 7, 3)
    start = time.perf_counter()
    assert headers.read_header(io.BytesIO(stray)) == ("jpeg", 5, 7)
    assert time.perf_counter() - start < 0.5
    ok, tiff = cv2.imencode(".tif", np.zeros((5, 7, 3), np.uint8))
    assert headers.read_header(io.BytesIO(tiff.tobytes())) is None  # OpenCV's own guard
    assert headers.read_header(io.BytesIO(b"")) is None
    failures, attempted = doctest.testmod(headers)
    assert attempted > 0 and failures == 0


def test_an_image_bomb_is_refused_from_its_header_without_decoding(cli_files, monkeypatch):
    root, _, pngs, _ = cli_files

    def decode(*args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(cv2, "imdecode", decode)
    start = time.perf_counter()
    message = (r"'.*bomb.png' has 40000x40000 = 1,600,000,000 pixels, above the limit of 178,956,970 "
               r"\(max_pixels\); raise max_pixels if you trust the file")
    with pytest.raises(ValueError, match=message):
        kc.visualize.read_image(root / "bomb.png")
    assert time.perf_counter() - start < 0.5
    with pytest.raises(ValueError, match=r"`size` \(100000, 100000\) is 10,000,000,000 pixels, above "):
        kc.visualize.read_image(pngs[0], size=(100000, 100000))
    with pytest.raises(ValueError, match="`max_pixels` must be a positive integer or None, got 0"):
        kc.visualize.read_image(pngs[0], max_pixels=0)


def test_other_formats_meet_opencvs_own_limit(tmp_path):
    # A TIFF declaring 40000 x 40000: above OpenCV's default (2**30) and keras_cam's; OpenCV refuses it.
    path = tmp_path / "bomb.tif"
    path.write_bytes(_tiff_header(40000, 40000))
    for limit in (kc.visualize.DEFAULT_MAX_PIXELS, None):
        with pytest.raises(ValueError, match="larger than the OPENCV_IO_MAX_IMAGE_PIXELS .* variable allows"):
            kc.visualize.read_image(path, max_pixels=limit)


def test_import_sets_opencvs_pixel_limit_before_cv2_and_keeps_the_users():
    # A fresh interpreter: keras_cam first, then cv2 (as `keras-cam` and `import keras_cam` before keras do).
    code = ("import os, sys, numpy as np; sys.path.insert(0, os.getcwd()); import keras_cam, cv2\n"
            "try:\n"
            "    cv2.imdecode(np.frombuffer(bytes.fromhex(sys.argv[1]), np.uint8), cv2.IMREAD_COLOR)\n"
            "    print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'], 'not refused')\n"
            "except cv2.error as e:\n"
            "    refused = 'CV_IO_MAX_IMAGE_PIXELS' in str(e)\n"
            "    print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'], 'refused' if refused else e)\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}

    def run(side, **extra):
        proc = subprocess.run([sys.executable, "-c", code, _tiff_header(side, side).hex()],
                              capture_output=True, text=True, timeout=120, env={**env, **extra})
        return proc.stdout.strip()

    assert kc.visualize.DEFAULT_MAX_PIXELS == 178_956_970 and 13380 ** 2 > 178_956_970
    assert run(13380) == "178956970 refused"  # just above the default: refused before any allocation
    assert run(40, OPENCV_IO_MAX_IMAGE_PIXELS="1000") == "1000 refused"  # the user's own value is kept
