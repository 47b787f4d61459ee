"""What a file given as weights looks like, from its first bytes.

A weights path that holds something else (a git-lfs pointer, a login page saved by a download,
an image, a text file) should be reported as what it is, so the user knows the fix (fetch the
real file), instead of as a pickle error that invites turning the loader's safety off.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

__all__ = ["describe_non_checkpoint"]

_HEAD = 512

# (magic at offset 0, what it is) for formats a mistaken download or path commonly holds.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive (unpack it first)"),
    (b"BZh", "a bzip2 archive (unpack it first)"),
    (b"\xfd7zXZ\x00", "an xz archive (unpack it first)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-zip archive (unpack it first)"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (a Keras/TensorFlow model?)"),
)


def describe_non_checkpoint(path: str | os.PathLike[str]) -> str | None:
    """What ``path`` is, if it is clearly not a checkpoint (``None`` if it may be one).

    A checkpoint is a torch zip archive, a legacy torch pickle, or a safetensors file (an 8-byte
    header length followed by a JSON header); anything else is described, e.g. ``"a git-lfs
    pointer: the real file was not downloaded (git lfs pull)"``.
    """
    p = Path(path)
    with open(p, "rb") as fh:
        head = fh.read(_HEAD)
    size = p.stat().st_size
    if not head:
        return "an empty file (an interrupted download?)"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return None  # torch's zip format, or a (legacy) pickle
    if _looks_like_safetensors(head, size):
        return None
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"version https://git-lfs.github.com/spec"):
        return ("a git-lfs pointer: the real file was not downloaded (run git lfs pull in its "
                "repository, or download the file itself)")
    lowered = text[:64].lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return ("an HTML page, not weights (a download that saved a login or error page: "
                "download the file itself)")
    if lowered.startswith(b"<?xml"):
        return "an XML document, not weights (a download that saved an error response?)"
    if text[:1] in (b"{", b"[") and _is_text(head):
        return "a JSON file, not weights (a model card or config? pass the weights file beside it)"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if _is_text(head):
        return f"a text file ({size} bytes), not weights"
    if head.startswith(b"\x08"):  # protobuf field 1 (ir_version), as an ONNX model starts
        return "possibly an ONNX model (virtime reads .pth/.pt state dicts and .safetensors)"
    return None


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 0 < header_len <= size - 8 and head[8:9] == b"{"


def _is_text(head: bytes) -> bool:
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the end of the sample is still text.
        try:
            decoded = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return all(ch.isprintable() or ch in "\t\r\n" for ch in decoded)
