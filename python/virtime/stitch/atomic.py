"""Deprecated: the atomic writers and the run manifest live in :mod:`virtime.io` now.

``from virtime.stitch.atomic import atomic_path`` keeps working (same objects as
``virtime.io``) but warns once on import; virtime itself imports from ``virtime.io`` only, so
the warning reaches only user code that still uses the old path.
"""

from __future__ import annotations

import warnings

from virtime.io.atomic import RunManifest, atomic_path, atomic_write_bytes, atomic_write_json

__all__ = ["RunManifest", "atomic_path", "atomic_write_bytes", "atomic_write_json"]

warnings.warn("virtime.stitch.atomic is deprecated; import RunManifest, atomic_path, "
              "atomic_write_bytes and atomic_write_json from virtime.io", DeprecationWarning,
              stacklevel=2)
