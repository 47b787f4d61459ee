"""One cohort run at a time per output root: the cohort lock.

Two ``virtime cohort run`` on one output would write one ledger: each marks the slides the other
holds (their slide locks) as failed and the last snapshot wins, so finished slides go missing
from the ledger and the cohort table. The driver therefore locks the output root, as a slide
folder is locked (:class:`virtime.translation.lock.SlideLock`: an ``O_EXCL`` file naming the
owner host and pid, a dead owner's lock on this host taken over), before it reads the ledger,
and holds it until its cohort table is written. A second run stops at once with one line.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from virtime.translation.lock import SlideLock

__all__ = ["COHORT_LOCK_NAME", "cohort_lock"]

#: The lock file in the output root, present only while a cohort run holds it.
COHORT_LOCK_NAME = ".cohort.lock"


@contextlib.contextmanager
def cohort_lock(out_root: str | os.PathLike[str]) -> Iterator[SlideLock]:
    """Hold the cohort lock of ``out_root`` for the ``with`` block.

    Raises :class:`~virtime.errors.OutputLockedError` (one line naming the folder, the owner and
    the lock file) when another cohort run holds it; released on every exit path.
    """
    lock = SlideLock(out_root, name=COHORT_LOCK_NAME, holder="another virtime cohort run",
                     wait_hint="wait for it to finish").acquire()
    try:
        yield lock
    finally:
        lock.release()
