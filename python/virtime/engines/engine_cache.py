"""On-disk cache of serialized TensorRT engines, keyed so a stale or foreign engine is never used.

An engine is only valid for the weights, TensorRT flavour and version, precision, batch profile,
window and GPU it was built for. Each entry is two files: ``<stem>.engine`` (the plan) and
``<stem>.json`` (the full key plus the plan's size and sha256). A lookup trusts an entry only if
its sidecar repeats the requested key exactly and the plan's bytes match the recorded hash; anything
else (truncated copy, file renamed or copied from another machine, other version) is logged as a
warning, removed and rebuilt.

The same rule holds for the other derived files in the cache (ONNX exports, fp16 conversions):
:func:`cached_file` keeps each beside a sidecar ``<file>.json`` that records what it was built from
(the hash of the weights or of the source graph) and the sha256 of its own bytes, both checked on
every load. Entry and sidecar are written atomically through :mod:`virtime.io`, entry first, so
a crash or a concurrent writer can only leave an entry that fails verification (and is rebuilt),
never one that is trusted wrongly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from virtime.io import atomic_path, atomic_write_bytes

__all__ = ["EngineCache", "EngineKey", "cached_file", "sidecar_path", "verify_entry"]

logger = logging.getLogger(__name__)

_FORMAT = 1
_PROFILE_FIELDS = ("model_hash", "precision", "min_batch", "opt_batch", "max_batch", "window")


@dataclasses.dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on.

    ``target`` names the GPU the plan is for (e.g. ``"NVIDIA H100 80GB HBM3|sm_90"``), or the
    compute capabilities of an ahead-of-time build (``"aot:SM89"``, ``"aot:default"``).
    """

    model_hash: str
    flavour: str
    trt_version: str
    precision: str
    min_batch: int
    opt_batch: int
    max_batch: int
    window: int
    target: str
    input_dtype: str = "float32"

    def as_dict(self) -> dict[str, object]:
        """Plain dict (JSON-ready) of the key fields."""
        return dataclasses.asdict(self)

    @property
    def digest(self) -> str:
        """sha256 of the canonical JSON of the key."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def stem(self) -> str:
        """Readable, unique file stem of the entry."""
        return (
            f"{self.model_hash[:12]}-{self.flavour}-{self.precision}-b{self.max_batch}"
            f"-w{self.window}-{self.digest[:16]}"
        )


#: Permissions of cache files: a cache folder is often shared between users, whatever the umask.
_CACHE_MODE = 0o644


def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data, mode=_CACHE_MODE)


def _file_digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The sidecar ``<file>.json`` of a cached file."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def verify_entry(path: str | os.PathLike[str], built_from: dict[str, object]) -> str | None:
    """Why the cached ``path`` cannot be trusted for ``built_from``, or None when it can.

    Returns ``"missing"`` when neither the file nor its sidecar exists (a plain cache miss).
    """
    path = Path(path)
    meta_path = sidecar_path(path)
    if not path.exists() and not meta_path.exists():
        return "missing"
    if not path.is_file():
        return "the file is missing (its sidecar is left)"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        return f"it has no sidecar {meta_path.name} (written by an older virtime, or interrupted)"
    except (OSError, ValueError) as exc:
        return f"unreadable sidecar {meta_path.name} ({exc})"
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        return f"sidecar {meta_path.name} has an unknown format"
    if meta.get("built_from") != built_from:
        return f"it was built from something else ({_key_diff(meta.get('built_from'), built_from)})"
    try:
        size, digest = _file_digest(path)
    except OSError as exc:
        return f"unreadable file ({exc})"
    if size != meta.get("size") or digest != meta.get("sha256"):
        return (f"its bytes do not match the recorded sha256 (altered, corrupt or truncated: "
                f"{size} bytes, expected {meta.get('size')})")
    return None


def _store_file(
    path: Path, write: Callable[[Path], object], built_from: dict[str, object], kind: str
) -> None:
    with atomic_path(path, mode=_CACHE_MODE) as tmp:
        write(tmp)
        size, digest = _file_digest(tmp)
    meta = {"format": _FORMAT, "kind": kind, "built_from": built_from, "size": size,
            "sha256": digest}
    # Entry first, then its sidecar: an interruption in between leaves an entry whose sidecar
    # does not vouch for it, which the next load rebuilds.
    _atomic_write(sidecar_path(path), json.dumps(meta, indent=1, sort_keys=True).encode())


def cached_file(
    path: str | os.PathLike[str],
    built_from: dict[str, object],
    write: Callable[[Path], object],
    *,
    kind: str,
) -> Path:
    """``path``, verified against its sidecar, or rebuilt by ``write(tmp_path)`` and stored.

    ``built_from`` names what the file is derived from (e.g. ``{"weights_sha256": ...}``); an
    entry whose sidecar records anything else, whose bytes do not match the recorded sha256, or
    that has no readable sidecar is logged as a warning naming the file and the reason, and
    rebuilt. ``kind`` is a readable name used in the messages ("ONNX export").
    """
    path = Path(path)
    reason = verify_entry(path, built_from)
    if reason is None:
        return path
    if reason != "missing":
        logger.warning("cached %s %s is invalid: %s; rebuilding it", kind, path, reason)
    _store_file(path, write, built_from, kind)
    return path


class EngineCache:
    """A folder of verified serialized engines (``<cache_dir>/tensorrt``)."""

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.root = Path(cache_dir) / "tensorrt"

    def paths(self, key: EngineKey) -> tuple[Path, Path]:
        """``(engine_path, sidecar_path)`` of ``key``'s entry."""
        return self.root / f"{key.stem}.engine", self.root / f"{key.stem}.json"

    def load(self, key: EngineKey, built_from: dict[str, object] | None = None) -> bytes | None:
        """The plan for ``key`` if present and verified, else ``None`` (bad entries are removed).

        ``built_from`` (e.g. ``{"weights_sha256": ...}``), when given, must equal what the
        sidecar records the plan was built from.
        """
        engine_path, meta_path = self.paths(key)
        if not engine_path.exists() and not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            self.invalidate(key, f"unreadable sidecar ({exc})")
            return None
        if meta.get("format") != _FORMAT or meta.get("key") != key.as_dict():
            diff = _key_diff(meta.get("key"), key.as_dict())
            self.invalidate(key, f"the entry was built for a different configuration ({diff})")
            return None
        if built_from is not None and meta.get("built_from") != built_from:
            diff = _key_diff(meta.get("built_from"), built_from)
            self.invalidate(key, f"the entry was built from other weights ({diff})")
            return None
        try:
            data = engine_path.read_bytes()
        except OSError as exc:
            self.invalidate(key, f"unreadable engine ({exc})")
            return None
        if len(data) != meta.get("size") or hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            self.invalidate(
                key, f"the engine file is corrupt or truncated ({len(data)} bytes, "
                f"expected {meta.get('size')})"
            )
            return None
        return data

    def store(
        self, key: EngineKey, data: bytes, built_from: dict[str, object] | None = None
    ) -> Path:
        """Write the plan and its sidecar atomically (plan first, so a sidecar implies a plan)."""
        self.root.mkdir(parents=True, exist_ok=True)
        engine_path, meta_path = self.paths(key)
        _atomic_write(engine_path, bytes(data))
        meta = {
            "format": _FORMAT,
            "key": key.as_dict(),
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        if built_from is not None:
            meta["built_from"] = built_from
        _atomic_write(meta_path, json.dumps(meta, indent=1, sort_keys=True).encode())
        return engine_path

    def invalidate(self, key: EngineKey, reason: str) -> None:
        """Remove ``key``'s entry, logging why; the caller rebuilds."""
        engine_path, meta_path = self.paths(key)
        logger.warning("discarding cached TensorRT engine %s: %s; rebuilding", engine_path, reason)
        engine_path.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)

    def foreign_entries(self, key: EngineKey) -> list[dict[str, object]]:
        """Keys of entries for the same model/precision/profile built for another GPU or version."""
        if not self.root.is_dir():
            return []
        found = []
        want = key.as_dict()
        for meta_path in sorted(self.root.glob("*.json")):
            try:
                other = json.loads(meta_path.read_text()).get("key") or {}
            except (OSError, ValueError):
                continue
            if other != want and all(other.get(f) == want[f] for f in _PROFILE_FIELDS):
                found.append(other)
        return found

    def get_or_build(
        self, key: EngineKey, build: Callable[[], bytes],
        built_from: dict[str, object] | None = None,
    ) -> tuple[bytes, bool]:
        """``(plan, from_cache)``: the verified cached plan, or ``build()`` stored under ``key``."""
        data = self.load(key, built_from)
        if data is not None:
            logger.info("using cached TensorRT engine %s", self.paths(key)[0])
            return data, True
        for other in self.foreign_entries(key):
            logger.warning(
                "a cached engine for this model was built for %s %s on %s; building one for "
                "%s %s on %s", other.get("flavour"), other.get("trt_version"), other.get("target"),
                key.flavour, key.trt_version, key.target,
            )
        data = bytes(build())
        self.store(key, data, built_from)
        return data, False


def _key_diff(stored: object, wanted: dict[str, object]) -> str:
    if not isinstance(stored, dict):
        return "no key recorded"
    parts = [
        f"{k}: {stored.get(k)!r} != {v!r}" for k, v in wanted.items() if stored.get(k) != v
    ]
    return ", ".join(parts) or "format differs"
