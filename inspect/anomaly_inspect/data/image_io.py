"""Robust, memory-bounded image and mask decoding.

Every image comes back as an RGB ``uint8`` array whatever is on disk:
grayscale, RGBA (alpha dropped), 16-bit, 32-bit or float (scaled to 8 bit by one fixed rule
per sample type, see :func:`read_image`) or palette images, turned upright by its EXIF
orientation, exactly once whichever decoder reads it (OpenCV 5 and recent Pillow turn a TIFF
by its orientation tag on their own; their copy of the tag is reset first). The header is read first (PIL's lazy
open: size without decoding) and an image above the pixel budget is refused
before any pixel is decoded (one in a format PIL's probe does not read, once
decoded); a very large JPEG is decoded at a reduced size
(DCT scaling) when the caller needs fewer pixels. Anything that cannot be
used raises :class:`ImageReadError` naming the file and the reason, so a
caller can record it and carry on.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import struct
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif",
                    ".pbm", ".pgm", ".ppm", ".pnm", ".pam", ".pfm", ".jp2", ".j2k")
#: default pixel budget (width x height) of one image; larger ones are refused before decoding
DEFAULT_MAX_PIXELS = 100_000_000
#: images above this many pixels are decoded at a reduced size where the format allows it
REDUCE_ABOVE_PIXELS = 16_000_000
#: the factors such an image's decode is reduced by (libjpeg's DCT scaling), the largest that
#: keeps the asked side
REDUCE_FACTORS = (2, 4, 8)
# First bytes of the formats we read, to find images whose extension is unusual.
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a",
          b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+",  # classic TIFF, BigTIFF
          b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")  # JPEG 2000: JP2 file, J2K codestream
# A Netpbm, PAM or PFM file without its extension is an image only by a full header: text can
# start "P1 12, bracket" or "P3 #12 reshoot". Between tokens: whitespace and "#" comments to
# the line's end; each number is a decimal integer followed by whitespace
_PNM_GAP = rb"(?:\s|#[^\r\n]*[\r\n])*"
_PNM_NUM = rb"0*([1-9][0-9]{0,8})\s" + _PNM_GAP
_NETPBM = re.compile(rb"P[14](?:\s|#[^\r\n]*[\r\n])" + _PNM_GAP + _PNM_NUM * 2  # width height
                     + rb"|P[2356](?:\s|#[^\r\n]*[\r\n])" + _PNM_GAP + _PNM_NUM * 3)  # + maxval
_PFM = re.compile(rb"P[Ff]\s+0*[1-9][0-9]{0,8}\s+0*[1-9][0-9]{0,8}\s+"  # width height scale
                  rb"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\s")
_PAM_NEEDS = {b"WIDTH", b"HEIGHT", b"DEPTH", b"MAXVAL"}
_PNM_HEAD = 1 << 16  # bytes read for a Netpbm header: room for long comments
# A BMP starts with "BM", as plenty of text does ("BMW parts"): its DIB header size says which
_BMP_DIB_SIZES = (12, 16, 40, 52, 56, 64, 108, 124)
# the formats whose size PIL reads from the header, so the budget holds before decoding; PPM
# covers PBM / PGM / PPM / PNM. Others OpenCV reads (PAM, PFM, Sun raster, HDR, EXR) are
# decoded first and refused after (:func:`_decode`)
_PROBE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "JPEG2000")
_PNG_IEND = b"IEND\xaeB`\x82"
_DARK_16_BIT: list[Path] = []  # the first 16-bit image with 12-bit values, warned about once
_DARK_WIDE: list[Path] = []  # the first int16 / uint32 / ... image nearly black
_BRIGHT_FLOAT: list[Path] = []  # the first float image largely above 1 (clipped to white)
_FLOAT_WHITE = 1.0 + 0.5 / 255  # a float sample above this is more than rounding past 1
_EMPTY_MASK: list[Path] = []  # the first mask that marks no pixel, warned about once
_FULL_MASK: list[Path] = []  # the first mask that marks every pixel, warned about once
_TIFF_ORIENTATION_TAG = 0x0112


class ImageReadError(OSError):
    """An image file that exists but cannot be used; ``str()`` names path and reason."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def looks_like_image(path: Path | str) -> bool:
    """True when the file's first bytes are those of an image format we read (a FIFO or device
    is not opened: reading it could wait forever)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as fh:
            head = fh.read(32)
            if head[:1] == b"P":  # a Netpbm header may hold long comments
                head += fh.read(_PNM_HEAD - len(head))
    except OSError:
        return False
    return (head.startswith(_MAGIC) or _netpbm_header(head)
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
            or (head[:2] == b"BM" and len(head) >= 18
                and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES))


def _netpbm_header(head: bytes) -> bool:
    """True when ``head`` starts with a whole Netpbm header: P1 / P4 width height, P2 / P3 /
    P5 / P6 width height maxval (1 to 65535), P7 (PAM) lines naming WIDTH, HEIGHT, DEPTH and
    MAXVAL up to ENDHDR, PF / Pf width height scale."""
    if (m := _NETPBM.match(head)) is not None:
        return m.group(1) is not None or int(m.group(5)) <= 65535  # P1 / P4: no maxval
    if _PFM.match(head) is not None:
        return True
    if not head.startswith((b"P7\n", b"P7\r\n")):
        return False
    seen: set[bytes] = set()
    for line in head.splitlines()[1:]:
        words = line.split()
        if not words or words[0].startswith(b"#"):
            continue
        if words[0] == b"ENDHDR":
            return seen >= _PAM_NEEDS
        if words[0] == b"TUPLTYPE":
            continue
        if words[0] not in _PAM_NEEDS or len(words) != 2 or not words[1].isdigit() or int(words[1]) < 1:
            return False
        seen.add(words[0])
    return False


@dataclass(frozen=True)
class _Header:
    width: int
    height: int
    format: str
    frames: int
    orientation: int
    palette: bool = False  # a palette (P-mode) image: a mask's class indices are its pixels
    samples: int = 0  # a TIFF's samples per pixel (tag 277), alpha included; 0: not read


#: copies of files that could not be read where they live (a distributed engine ships the
#: reason instead of the bytes, see :func:`unreadable_copies`): path -> that reason
_UNREADABLE: dict[Path, str] = {}


@contextmanager
def unreadable_copies(reasons: Mapping[Path, str]) -> Iterator[None]:
    """Within the block, reading any of these paths raises :class:`ImageReadError` with its
    reason (the one the file's own reading gave where it lives)."""
    _UNREADABLE.update({Path(p): r for p, r in reasons.items()})
    try:
        yield
    finally:
        for p in reasons:
            _UNREADABLE.pop(Path(p), None)


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a file"


def _check_regular(path: Path, mode: int) -> None:
    """Refuse a folder, FIFO, device or socket: its size says nothing and reading it may wait
    forever or never end."""
    if stat.S_ISDIR(mode):
        raise ImageReadError(path, "is a directory, not an image file")
    if not stat.S_ISREG(mode):
        raise ImageReadError(path, f"not a regular file ({_file_kind(mode)}); images are read "
                                   f"from regular files only")


def read_file(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """An image file's bytes; one larger than any image within ``max_pixels`` is refused from
    its size before it is read, and at most that much is read (a file that grows meanwhile is
    refused too). Only a regular file is read: a FIFO, device or socket is refused unopened
    (and, should one replace the file before it is opened, unread). Raises
    :class:`ImageReadError` naming the reason."""
    path = Path(path)
    if path in _UNREADABLE:
        raise ImageReadError(path, _UNREADABLE[path])
    # no format stores a picture in more than 8 bytes per pixel (16-bit RGBA) plus headers
    limit = 8 * max_pixels + (64 << 20)

    def too_large(size: float) -> ImageReadError:
        return ImageReadError(path, f"file too large for the pixel budget ({size / 2**20:.0f} "
                                    f"MiB for at most {max_pixels / 1e6:g} MP)")
    try:
        st = path.stat()
        _check_regular(path, st.st_mode)
        if st.st_size > limit:  # refused from its size, unopened
            raise too_large(st.st_size)
        # non-blocking: opening a FIFO put in the file's place meanwhile must not wait for a writer
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        with open(os.open(path, flags), "rb") as fh:
            st = os.fstat(fh.fileno())
            _check_regular(path, st.st_mode)
            if st.st_size > limit:
                raise too_large(st.st_size)
            data = fh.read(min(st.st_size, limit) + 1)  # no buffer larger than the file
            if len(data) > st.st_size:  # it grew since: read on in bounded chunks
                parts, total = [data], len(data)
                while total <= limit and (chunk := fh.read(min(1 << 20, limit + 1 - total))):
                    parts.append(chunk)
                    total += len(chunk)
                data = b"".join(parts)
        if len(data) > limit:
            raise too_large(len(data))
    except FileNotFoundError:
        if path.is_symlink():
            raise ImageReadError(path, f"broken symbolic link (to {os.readlink(path)})") from None
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory, not an image file") from None
    except ImageReadError:
        raise
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise ImageReadError(path, "file is empty (0 bytes)")
    return data


# a marker: 0xFF and a code that is neither 0x00 nor 0xFF (fill bytes 0xFF may come before it;
# no ``+`` after the 0xFF, which would make the search many times slower)
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xff]")
# where entropy-coded data ends: a marker other than a stuffed 0xFF00 or a restart RST0-RST7
_JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# markers without a length field: TEM, RST0-RST7, SOI
_JPEG_STANDALONE = frozenset((0x01, *range(0xD0, 0xD9)))


def _jpeg_has_end(data: bytes) -> bool:
    """Whether the JPEG's end-of-image marker follows its scans, found by walking its marker
    segments and skipping each scan's entropy-coded data (a progressive JPEG has several), so
    that bytes after the image (a phone's "motion photo" appends a video) are never read as
    part of it. A file that ends before its first scan is left to the decoder."""
    pos, scanned = 2, False
    while (m := _JPEG_MARKER.search(data, pos)) is not None:
        code, pos = data[m.end() - 1], m.end()
        if code == 0xD9:
            return True
        if code in _JPEG_STANDALONE:
            continue
        if pos + 2 > len(data):
            break
        pos += int.from_bytes(data[pos:pos + 2], "big")
        if code == 0xDA:  # start of scan: its entropy-coded data runs to the next marker
            scanned = True
            if (m := _JPEG_SCAN_END.search(data, pos)) is None:
                return False
            pos = m.start()
    return not scanned


def _check_complete(path: Path, data: bytes) -> None:
    """Reject a truncated JPEG (no end-of-image marker) or PNG (no IEND chunk), which OpenCV
    would decode partially; other formats: :func:`_check_data_end`."""
    if data[:3] == b"\xff\xd8\xff":
        if not _jpeg_has_end(data):
            raise ImageReadError(path, "truncated JPEG (no end-of-image marker)")
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        end = data.rfind(_PNG_IEND)
        if end < 0:
            raise ImageReadError(path, "truncated PNG (no IEND chunk)")
        extra = len(data) - end - len(_PNG_IEND)
        if extra:
            log.warning("%s: %d bytes after the PNG's end (IEND chunk) ignored", path, extra)


def _check_data_end(path: Path, data: bytes) -> None:
    """Reject a file shorter than its header says, from its bytes alone, with no decoding (a
    decoder would refuse it only when it decodes, after the header checks of a whole split, or
    fill the missing rows): WebP (its RIFF size), uncompressed BMP, binary PBM / PGM / PPM and
    TIFF (where their pixel data ends). Other formats (GIF, JPEG 2000, ASCII Netpbm, PAM, PFM,
    compressed BMP) are left to the decoder."""
    fmt, end = _data_end(data)
    if end is not None and end > len(data):
        raise ImageReadError(path, f"truncated {fmt} (the file has {len(data)} bytes; its "
                                   f"header puts the end of its image data at byte {end})")


def _data_end(data: bytes) -> tuple[str, int | None]:
    """The format and where its image data ends by the header (the RIFF size of a WebP, the
    rows of an uncompressed BMP or a binary PBM / PGM / PPM, the strips or tiles of a TIFF);
    None where the header does not tell."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP", 8 + int.from_bytes(data[4:8], "little")
    if data[:2] == b"BM":
        return "BMP", _bmp_end(data)
    if (netpbm := {b"P4": "PBM", b"P5": "PGM", b"P6": "PPM"}.get(data[:2])) is not None:
        return netpbm, _pnm_end(data)
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # classic and BigTIFF
        return "TIFF", _tiff_end(data)
    return "", None


# BMP compressions whose pixel rows are stored as they are: BI_RGB, BI_BITFIELDS,
# BI_ALPHABITFIELDS (in OS/2's 16 and 64-byte headers 3 means Huffman: not read as rows)
_BMP_ROWS = {0: _BMP_DIB_SIZES, 3: (40, 52, 56, 108, 124), 6: (40, 52, 56, 108, 124)}


def _bmp_end(data: bytes) -> int | None:
    """Where an uncompressed BMP's pixel rows end: the pixel-data offset plus each row padded
    to 4 bytes, but for the last row's padding (some writers leave it out); None for a
    compressed (RLE, JPEG, PNG) BMP or a header that does not add up (the decoder decides)."""
    dib = int.from_bytes(data[14:18], "little")
    if dib not in _BMP_DIB_SIZES or len(data) < 14 + min(dib, 20):
        return None
    offset = int.from_bytes(data[10:14], "little")
    if dib == 12:  # OS/2 1.x: 16-bit sizes, no compression field
        width, height, bits = struct.unpack_from("<HHxxH", data, 18)
        compression = 0
    else:
        width, height, bits = struct.unpack_from("<iixxH", data, 18)
        compression = int.from_bytes(data[30:34], "little") if dib >= 20 else 0
        height = abs(height)  # negative: rows stored top-down
    if (dib not in _BMP_ROWS.get(compression, ()) or bits not in (1, 2, 4, 8, 16, 24, 32)
            or width <= 0 or height <= 0 or offset < 14 + dib):
        return None
    stride = (width * bits + 31) // 32 * 4
    return offset + stride * (height - 1) + (width * bits + 7) // 8


def _pnm_end(data: bytes) -> int | None:
    """Where a binary PBM (P4), PGM (P5) or PPM (P6) raster ends: the header, the one
    whitespace byte after its last number, then the rows (P4: a bit a pixel, each row padded
    to a byte; P5 / P6: one or three samples a pixel, two bytes a sample above maxval 255)."""
    if (m := _NETPBM.match(data[:_PNM_HEAD])) is None:
        return None
    if data[:2] == b"P4":
        width, height = int(m.group(1)), int(m.group(2))
        return m.end(2) + 1 + (width + 7) // 8 * height
    width, height, maxval = int(m.group(3)), int(m.group(4)), int(m.group(5))
    sample = (1 if maxval < 256 else 2) * (3 if data[:2] == b"P6" else 1)
    return m.end(5) + 1 + width * height * sample


def _tiff_end(data: bytes) -> int | None:
    """Where the last strip or tile of a TIFF's first image (the one read) ends, by its
    offsets and byte counts (tags 273 / 279, 324 / 325, read by PIL without decoding); None
    where the header cannot be read or holds no byte counts."""
    from PIL import TiffImagePlugin

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tags = TiffImagePlugin.TiffImageFile(io.BytesIO(data)).tag_v2
            ends = []
            for offsets_tag, counts_tag in ((273, 279), (324, 325)):
                offsets, counts = tags.get(offsets_tag), tags.get(counts_tag)
                if offsets is None or counts is None:
                    continue
                offsets = offsets if isinstance(offsets, tuple) else (offsets,)
                counts = counts if isinstance(counts, tuple) else (counts,)
                ends += [int(o) + int(c) for o, c in zip(offsets, counts, strict=False)]
    except Exception:  # noqa: BLE001 - a header PIL cannot parse: the decoder decides
        return None
    return max(ends, default=None)


def _probe(path: Path, data: bytes) -> _Header | None:
    """Size, format, frame count (of a TIFF: its full-resolution pages), EXIF orientation and
    a TIFF's samples per pixel from the header; None if PIL cannot tell."""
    # those formats' plugins only (importing one registers it), not every plugin PIL has
    from PIL import (  # noqa: F401
        BmpImagePlugin,
        GifImagePlugin,
        Image,
        Jpeg2KImagePlugin,
        JpegImagePlugin,
        PngImagePlugin,
        PpmImagePlugin,
        TiffImagePlugin,
        WebPImagePlugin,
    )

    head = data[:16]
    for fmt in _PROBE_FORMATS:
        factory, accept = Image.OPEN.get(fmt, (None, None))
        if factory is None or (accept is not None and not accept(head)):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Corrupt EXIF data": the decoder decides below
                # the plugin itself, not Image.open: the budget below replaces PIL's bomb check
                im = factory(io.BytesIO(data), "")
                width, height = im.size
                if im.format == "TIFF":  # as stored: recent Pillow swaps size by orientation
                    width = int(im.tag_v2.get(256, width))
                    height = int(im.tag_v2.get(257, height))
                palette = im.mode == "P"
                samples = int(im.tag_v2.get(277, 1)) if im.format == "TIFF" else 0
                orientation = 1
                if im.format != "PNG" or "exif" in im.info:  # PNG's getexif() would decode it
                    orientation = int(im.getexif().get(_TIFF_ORIENTATION_TAG, 1) or 1)
                frames = int(getattr(im, "n_frames", 1)) if getattr(im, "is_animated", False) else 1
                if im.format == "MPO":  # a camera JPEG with extra pictures: the first is the image
                    frames = 1
                elif im.format == "TIFF" and frames > 1:
                    frames = _tiff_full_pages(im, frames)
        except Exception:  # noqa: BLE001 - a header PIL cannot parse: let the decoder decide
            continue
        return _Header(width, height, fmt, frames, orientation if 1 <= orientation <= 8 else 1,
                       palette, samples)
    return None


def _tiff_full_pages(im, frames: int) -> int:
    """How many of a TIFF's ``frames`` IFDs are full-resolution pages: one whose
    NewSubfileType (tag 254) has bit 0 set is a reduced-resolution copy (a thumbnail or
    preview) of another, not a page of its own. Reads the IFDs only; leaves ``im`` at IFD 0,
    the image read. Where IFD 0 is itself such a copy (the full page comes later), all
    ``frames``: the file is refused as multi-frame rather than read as its thumbnail."""
    reduced = []
    for i in range(frames):
        im.seek(i)
        reduced.append(bool(int(im.tag_v2.get(254, 0)) & 1))
    im.seek(0)
    return frames if reduced[0] else reduced.count(False)


def _tiff_upright_as_stored(data: bytes) -> bytes | bytearray:
    """A TIFF's bytes with the orientation tag of its first IFD (the image) set to 1, so that
    the decoder returns the pixels as stored and :func:`_orient` turns them once: OpenCV 5
    applies the tag even with ``IMREAD_UNCHANGED`` (and ``IMREAD_IGNORE_ORIENTATION``),
    recent Pillow on load, older versions of either do not (or only partly). A copy of the
    bytes, made only for a TIFF with an orientation; ``data`` itself where there is no such tag
    to reset."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None:
        return data
    try:
        (magic,) = struct.unpack_from(order + "H", data, 2)
        if magic == 42:  # classic TIFF: 2-byte entry count, 12-byte entries
            (ifd,) = struct.unpack_from(order + "I", data, 4)
            (n,), first, size, value_at = struct.unpack_from(order + "H", data, ifd), ifd + 2, 12, 8
        elif magic == 43:  # BigTIFF: 8-byte entry count, 20-byte entries
            (ifd,) = struct.unpack_from(order + "Q", data, 8)
            (n,), first, size, value_at = struct.unpack_from(order + "Q", data, ifd), ifd + 8, 20, 12
        else:
            return data
        for i in range(min(n, 65535)):
            pos = first + i * size
            tag, typ = struct.unpack_from(order + "HH", data, pos)
            if tag == _TIFF_ORIENTATION_TAG:
                fmt = {3: "H", 4: "I"}.get(typ)  # SHORT as the standard says, LONG from some writers
                if fmt is None:
                    return data
                out = bytearray(data)
                struct.pack_into(order + fmt, out, pos + value_at, 1)
                return out
    except struct.error:  # a header that ends early: the decoder decides
        return data
    return data


def _reduction(header: _Header | None, min_side: int | None) -> int:
    """DCT scale factor (1, 2, 4 or 8) for a large JPEG whose sides stay >= ``min_side``."""
    if (header is None or min_side is None or header.format != "JPEG"
            or header.width * header.height <= REDUCE_ABOVE_PIXELS):
        return 1
    short = min(header.width, header.height)
    return next((f for f in sorted(REDUCE_FACTORS, reverse=True) if short // f >= min_side), 1)


def _check_budget(path: Path, width: int, height: int, max_pixels: int) -> None:
    """Refuse an image of more than ``max_pixels`` pixels."""
    pixels = width * height
    if pixels > max_pixels:
        raise ImageReadError(path, f"image larger than the pixel budget ({width}x{height} = "
                                   f"{pixels / 1e6:.1f} MP > {max_pixels / 1e6:g} MP; raise "
                                   f"--max-pixels to allow it)")


def _checked_header(path: Path, max_pixels: int) -> tuple[bytes, _Header | None]:
    """The file's bytes and header (None where PIL cannot tell), refused if it is truncated,
    above the pixel budget or has several frames."""
    data = read_file(path, max_pixels)
    _check_complete(path, data)
    header = _probe(path, data)
    if header is not None:
        _check_budget(path, header.width, header.height, max_pixels)
        if header.frames > 1:
            raise ImageReadError(path, f"multi-frame image ({header.frames} frames, e.g. an "
                                       f"animated {header.format}); save the frame to screen as "
                                       f"a single image")
    _check_data_end(path, data)  # after the budget: a header claiming too much says so first
    return data, header


def image_size(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of the image :func:`read_image` would return, from the header where it
    tells (no decoding), after the checks ``read_image`` makes first; raises
    :class:`ImageReadError` as it would. For checking a whole split before long work."""
    path = Path(path)
    _, header = _checked_header(path, max_pixels)
    if header is None:
        img, orientation = _decode(path, max_pixels)
        height, width = img.shape[:2]
    else:
        width, height, orientation = header.width, header.height, header.orientation
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def reduction_factor(path: Path | str, min_side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """1, 2, 4 or 8: the factor by which :func:`read_image` with ``min_side`` reduces
    ``path``'s decode (only JPEGs over 16 MP are reduced). Reads the header only, except of a
    JPEG; raises :class:`ImageReadError` as ``read_image`` would."""
    path = Path(path)
    try:
        if stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the read; refused below
            with open(path, "rb") as fh:
                if fh.read(3) != b"\xff\xd8\xff":
                    return 1
    except OSError:
        pass  # the read below says why
    _, header = _checked_header(path, max_pixels)
    return _reduction(header, min_side)


def image_orientation(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """The EXIF orientation (1-8; 1: as stored) by which :func:`read_image` and
    :func:`read_mask` turn ``path`` upright, from the header; raises :class:`ImageReadError` as
    :func:`image_size` would. For messages that give an image's size as stored too."""
    _, header = _checked_header(Path(path), max_pixels)
    return 1 if header is None else header.orientation


def _upright_data(data: bytes, header: _Header | None) -> bytes | bytearray:
    """``data`` for a decoder that must leave the orientation to :func:`_orient`."""
    if header is not None and header.format == "TIFF" and header.orientation != 1:
        return _tiff_upright_as_stored(data)
    return data


def _decode(path: Path, max_pixels: int, min_side: int | None = None,
            checked: tuple[bytes, _Header | None] | None = None) -> tuple[np.ndarray, int]:
    """Decoded array (OpenCV channel order) and the EXIF orientation still to apply.
    ``checked``: the file's :func:`_checked_header`, where the caller has read it already."""
    data, header = _checked_header(path, max_pixels) if checked is None else checked
    data = _upright_data(data, header)
    factor = _reduction(header, min_side)
    flags = cv2.IMREAD_UNCHANGED if factor == 1 else (
        {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
         8: cv2.IMREAD_REDUCED_COLOR_8}[factor] | cv2.IMREAD_IGNORE_ORIENTATION)
    buf = np.frombuffer(data, dtype=np.uint8)
    capped = False
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error as exc:
        img = None
        capped = "CV_IO_MAX_IMAGE" in str(exc)  # OpenCV's own size cap, checked before decoding
    if (img is None or img.size == 0) and header is not None:
        img = _decode_pil(path, data)
    if (img is None or img.size == 0) and capped:  # PIL's bomb guard refused it too
        size = "" if header is None else (f"{header.width}x{header.height} = "
                                          f"{header.width * header.height / 1e6:.1f} MP: ")
        raise ImageReadError(path, f"{size}above the decoder's own size limit (OpenCV's "
                                   f"OPENCV_IO_MAX_IMAGE_PIXELS, by default 2^30 pixels, 2^20 a "
                                   f"side); --max-pixels cannot raise it")
    if img is None or img.size == 0:
        raise ImageReadError(path, "not a decodable image (corrupt or unsupported format)")
    if header is None:  # a format PIL's header probe does not read: the budget holds after all
        _check_budget(path, img.shape[1], img.shape[0], max_pixels)
        return img, 1
    return img, header.orientation


def _decode_pil(path: Path, data: bytes | bytearray) -> np.ndarray | None:
    """Formats OpenCV does not read (e.g. GIF in some builds), in OpenCV's channel order. A
    16-bit, 32-bit or float image comes back with its samples as stored, for
    :func:`_to_uint8`'s rule (PIL's own conversion to RGB would clip them)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.mode.startswith(("I", "F")):  # I;16, I;16B, I (int32), F (float32)
                wide = np.asarray(im)
                return wide.astype(wide.dtype.newbyteorder("="), copy=False)
            rgb = np.asarray(im.convert("RGB"))
    except Exception:  # noqa: BLE001 - any decoder failure is "not decodable"
        return None
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def _tiff_with_alpha(data: bytes | bytearray, header: _Header) -> np.ndarray | None:
    """A gray+alpha (LA) or RGBA TIFF with its alpha channel (OpenCV's TIFF decoder returns
    LA as one channel), in OpenCV's channel order, as stored; None where PIL does not read
    it so (e.g. 16-bit gray+alpha): then the decoder's array is used."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # the plugin itself, as _probe: the pixel budget was checked, not PIL's bomb limit
            with Image.OPEN[header.format][0](io.BytesIO(_upright_data(data, header)), "") as im:
                mode = im.mode
                if mode not in ("LA", "RGBA"):
                    return None
                img = np.asarray(im)
    except Exception:  # noqa: BLE001 - the decoder's array is used
        return None
    return img if mode == "LA" else cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)


def _palette_mask(data: bytes | bytearray, header: _Header) -> tuple[np.ndarray, str] | None:
    """A palette mask by its class indices, not their colours (a VOC / labelme / CVAT colour
    map draws class 8 darker than the middle grey): (H, W) ``uint8``, 1 where the index is not
    background, as stored, and the indices used (for messages). Background: the indices
    drawn black, or index 0 (the convention) where no pixel is black, and any index the
    palette makes fully transparent. Black rather than index 0 first, because a quantiser
    may put a black-and-white mask's white at index 0. None where PIL does not give the
    indices (then the colours decide, as for any image)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # the plugin itself, as _probe: the pixel budget was checked, not PIL's bomb limit
            with Image.OPEN[header.format][0](io.BytesIO(_upright_data(data, header)), "") as im:
                indices = np.asarray(im)
                mode, colours = im.mode, im.getpalette("RGB") or []
                transparency = im.info.get("transparency")
    except Exception:  # noqa: BLE001 - the decoder below decides
        return None
    if mode != "P" or indices.dtype != np.uint8 or indices.ndim != 2:
        return None
    used = np.flatnonzero(np.bincount(indices.ravel(), minlength=256))
    rgb = np.zeros((256, 3), np.int32)
    rgb[: len(colours) // 3] = np.reshape(colours[: len(colours) // 3 * 3], (-1, 3))
    black = [int(i) for i in used if not rgb[i].any()]
    background = set(black) if black else {0}
    if isinstance(transparency, int):
        background.add(transparency)
    elif isinstance(transparency, bytes):  # one alpha per index
        background.update(i for i, alpha in enumerate(transparency) if alpha == 0)
    defect = np.ones(256, np.uint8)
    defect[[i for i in background if 0 <= i < 256]] = 0
    return defect[indices], f"palette indices {_first_values(used)}"


def _orient(img: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (2-8) so that the picture is upright."""
    if orientation in (5, 6, 7, 8):
        img = cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE if orientation in (5, 6)
                         else cv2.ROTATE_90_COUNTERCLOCKWISE)
    if orientation in (2, 4, 5, 7):
        img = cv2.flip(img, 1)
    if orientation in (3, 4):
        img = cv2.rotate(img, cv2.ROTATE_180)
    return np.ascontiguousarray(img)


#: rows converted at a time from a 32/64-bit integer image (bounds the float temporaries)
_ROWS_PER_BLOCK = 256


def _to_uint8(img: np.ndarray, path: Path) -> np.ndarray:
    """8-bit copy of ``img`` by the fixed rule of its sample type (see :func:`read_image`),
    without float temporaries the size of the image; ``img`` itself may be overwritten."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return cv2.convertScaleAbs(img, alpha=1.0 / 257.0)  # rounds like x / 257 + 0.5
    if np.issubdtype(img.dtype, np.floating):
        img = np.nan_to_num(img, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        np.clip(img, 0.0, 1.0, out=img)
        img *= 255.0
        img += 0.5  # round to nearest, as for 16 bit
        return img.astype(np.uint8)
    if not np.issubdtype(img.dtype, np.integer):
        raise ImageReadError(path, f"unsupported sample type {img.dtype}")
    info = np.iinfo(img.dtype)
    if info.min < 0 and img.size and int(img.min()) < 0:
        raise ImageReadError(path, f"signed {info.bits}-bit samples with negative values (down to "
                                   f"{int(img.min())}) have no fixed 8-bit scale; save the image "
                                   f"as unsigned (or 8/16-bit) data")
    scale = 255.0 / info.max  # [0, the type's maximum] -> [0, 255]
    if info.bits <= 16:  # int8 / int16: OpenCV scales and rounds without a float copy
        return cv2.convertScaleAbs(img, alpha=scale)
    out = np.empty(img.shape, np.uint8)
    for r in range(0, img.shape[0], _ROWS_PER_BLOCK):
        block = img[r:r + _ROWS_PER_BLOCK].astype(np.float64)
        block *= scale
        block += 0.5
        out[r:r + _ROWS_PER_BLOCK] = block
    return out


def read_image(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS,
               min_side: int | None = None) -> np.ndarray:
    """Read any supported image as an upright (H, W, 3) RGB ``uint8`` array.

    ``max_pixels``: refuse larger images before decoding. ``min_side``: a very
    large JPEG may be decoded at 1/2, 1/4 or 1/8 size as long as both sides
    stay at least this long (for callers that downscale anyway).

    Samples become 8 bit by one fixed rule per sample type, never by the image's own range
    (so that an image's brightness does not depend on its brightest pixel):

    - ``uint8``: as stored; ``uint16``: ``x / 257``, rounded;
    - other integers (``int8``, ``int16``, ``uint32``, ``int32``, ...): ``[0, the type's
      maximum]`` to ``[0, 255]``, rounded (``int16``: ``x * 255 / 32767``; ``uint32``:
      ``x * 255 / (2**32 - 1)``); a signed image with a negative sample is refused (no
      fixed scale fits it);
    - floats: ``[0, 1]`` to ``[0, 255]``, rounded; values outside are clipped (``NaN`` is 0).

    An image that comes out nearly black or largely white by these rules (16-bit data in 12
    bits, a wide integer type holding small counts, floats in ``[0, 255]`` or HDR) is logged,
    once each, naming the file.
    """
    path = Path(path)
    raw, orientation = _decode(path, max_pixels, min_side)
    if np.issubdtype(raw.dtype, np.floating) and not _BRIGHT_FLOAT:
        _warn_bright_float(raw, path)  # before _to_uint8, which clips raw in place
    if raw.dtype == np.uint16 and not _DARK_16_BIT and 0 < int(raw.max()) < 4096:
        _DARK_16_BIT.append(path)
        log.warning("%s: a 16-bit image whose values stay below 4096 (12-bit camera data?) is "
                    "scaled as 16-bit and comes out nearly black; convert such images to 8 bit "
                    "(x * 255 / 4095) first (said once)", path)
    img = _to_uint8(raw, path)
    if (raw.dtype not in (np.uint8, np.uint16) and np.issubdtype(raw.dtype, np.integer)
            and not _DARK_WIDE and int(img.max()) < 16 and int(raw.max()) > 0):
        _DARK_WIDE.append(path)
        log.warning("%s: a %s image whose values stay below 1/16 of its type's range (max %d) "
                    "comes out nearly black: integers are scaled from [0, the type's maximum]; "
                    "convert such images to 8 or 16 bit first (said once)", path, raw.dtype,
                    int(raw.max()))
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 1:
        img = cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    else:
        raise ImageReadError(path, f"unsupported number of channels: {img.shape[2]}")
    return _orient(img, orientation) if orientation != 1 else img


def _warn_bright_float(raw: np.ndarray, path: Path) -> None:
    """Log (once) a float image with more than 1/16 of its samples above 1, which clipping
    turns largely white: data in ``[0, 255]`` or HDR rather than ``[0, 1]``. Counted a block
    of rows at a time (no temporary the size of the image)."""
    over = 0
    for r in range(0, raw.shape[0], _ROWS_PER_BLOCK):
        block = raw[r:r + _ROWS_PER_BLOCK]
        # above what still rounds to 255 (1.00001 from a [0, 1] pipeline is no [0, 255] data);
        # +inf is 1 by _to_uint8's rule
        over += np.count_nonzero((block > _FLOAT_WHITE) & (block < np.inf))
    if over * 16 <= raw.size:
        return
    _BRIGHT_FLOAT.append(path)
    top = float(np.max(raw, where=np.isfinite(raw), initial=-np.inf))
    log.warning("%s: a float image with %.0f%% of its samples above 1 (max %g) comes out largely "
                "white: floats are scaled from [0, 1] and clipped; scale such images to [0, 1] or "
                "convert them to 8 or 16 bit first (said once)", path, 100 * over / raw.size, top)


def _levels_mask(raw: np.ndarray, path: Path) -> tuple[np.ndarray, str]:
    """A decoded mask (OpenCV channel order) as {0, 1} by its levels (:func:`read_mask`'s
    rules), as stored, and its values (for messages)."""
    visible = None
    if raw.ndim == 3:
        colours = 1 if raw.shape[2] == 2 else min(raw.shape[2], 3)  # LA / BGR / BGRA
        if raw.shape[2] in (2, 4):
            alpha = raw[:, :, -1]
            if alpha.size and alpha.min() != alpha.max():
                visible = alpha > 0
        raw = raw[:, :, :colours].max(axis=2)
    levels = np.unique(raw)
    two_level = len(levels) == 2 and levels[0] == 0
    labels = (np.issubdtype(raw.dtype, np.integer) and len(levels) > 0 and levels[0] >= 0
              and levels[-1] < 128)  # class indices 0 / 1 / 2 ...
    if two_level or labels:
        img = (raw > 0).astype(np.uint8)
    else:
        img = (_to_uint8(raw, path) > 127).astype(np.uint8)
    if visible is not None:
        img &= visible
    return img, f"values {_first_values(levels)}"


def _first_values(values) -> str:
    """The first six of a mask's ``values`` (levels or palette indices), for messages."""
    return ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")


def read_mask(path: Path | str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a ground-truth mask as an upright (H, W) ``uint8`` array of {0, 1}.

    A mask with two values, 0 and one other (0 / 255, 0 / 1, 0 / 65535, 0 / 255 in 16 bits),
    is that mask; so is an integer mask whose values all stay below 128 (a label or
    class-index mask, 0 / 1 / 2 ...: every non-zero label is defect). Any other is thresholded
    at the middle of the 8-bit range (anti-aliased or JPEG-compressed masks, 0 / 128 / 255).
    Colour channels count by their largest value. A palette image (PNG, GIF, BMP, TIFF) is
    read by its indices, not their colours: every index but the background's is defect (the
    indices drawn black, else index 0, and a transparent one: :func:`_palette_mask`). Where
    the mask has an alpha channel that varies (RGBA, LA), a pixel is marked only where it is
    also visible (alpha above 0): a defect drawn on a transparent background, opaque or as a
    semi-transparent overlay, is the defect, whatever colour the background holds. A mask
    that marks no pixel, or every pixel, is logged (once each) naming the file: only an
    anomalous image's mask is read, and either usually means levels the rules above do not
    fit."""
    path = Path(path)
    data, header = _checked_header(path, max_pixels)
    palette = _palette_mask(data, header) if header is not None and header.palette else None
    if palette is not None:
        (img, shown), orientation = palette, header.orientation
    else:
        raw, orientation = _decode(path, max_pixels, checked=(data, header))
        if header is not None and (raw.shape[2] if raw.ndim == 3 else 1) < header.samples:
            with_alpha = _tiff_with_alpha(data, header)  # the decoder dropped the alpha
            raw = raw if with_alpha is None else with_alpha
        img, shown = _levels_mask(raw, path)
    if not img.any() and not _EMPTY_MASK:
        _EMPTY_MASK.append(path)
        log.warning("%s: the mask marks no pixel (%s); its anomalous image counts as "
                    "having no defect area in the pixel metrics (said once)", path, shown)
    elif img.size and img.all() and not _FULL_MASK:
        _FULL_MASK.append(path)
        log.warning("%s: the mask marks every pixel (%s); its whole image counts as "
                    "defect in the pixel metrics: check that its background is 0 (said once)",
                    path, shown)
    return _orient(img, orientation) if orientation != 1 else img
