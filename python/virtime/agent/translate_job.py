"""Running a translation for the MCP ``translate`` tool: a worker process, its progress, its cancel.

:func:`run_translation` starts :mod:`virtime.agent.translate_worker`, follows the JSON-lines
progress log the translation writes, hands each ``progress`` event to a callback (the tool turns
them into MCP progress notifications), and, when the tool call is cancelled, interrupts the worker
with SIGINT and waits for it to leave a resumable folder before the cancellation goes on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from virtime.errors import VirtimeError

__all__ = ["TranslationFailedError", "run_translation"]

ProgressFn = Callable[[int, int], Awaitable[None]]

_POLL_S = 0.2
_INTERRUPT_GRACE_S = 60.0  # the worker settles queued band writes before it exits


class TranslationFailedError(VirtimeError, RuntimeError):
    """The translation worker stopped with an error (its message is the translation's)."""


def _read_events(log: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete JSON lines appended to ``log`` since ``offset``, and the new offset."""
    if not log.is_file():
        return [], offset
    with open(log, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1
    events = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return events, offset + end


async def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (the translation's own clean interrupt), then SIGKILL if it does not exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    with anyio.move_on_after(_INTERRUPT_GRACE_S):
        while proc.poll() is None:
            await anyio.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


async def run_translation(slide: Path, out: Path, weights: Path | None, config: dict[str, Any],
                          on_progress: ProgressFn) -> dict[str, Any]:
    """Translates ``slide`` into ``out/<slide_id>`` in a worker process.

    ``config`` holds flat :class:`~virtime.translation.TranslateConfig` keywords (JSON values).
    Returns the worker's result dict; raises :class:`TranslationFailedError` with the
    translation's own error message. Cancelling the awaiting task interrupts the worker, whose
    partial outputs stay resumable by the next call with the same settings.
    """
    # The worker's scratch (spec, progress log, stderr) lives under --output too: no tool call
    # writes anywhere else.
    with tempfile.TemporaryDirectory(prefix=".virtime-mcp-", dir=out) as tmp:
        work = Path(tmp)
        log, result = work / "progress.jsonl", work / "result.json"
        spec = {"slide": str(slide), "out": str(out),
                "weights": str(weights) if weights else None,
                "config": {**config, "log_json": str(log), "show_progress": False},
                "result": str(result)}
        (work / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        with open(work / "stderr.txt", "wb") as errfile:  # a file: a pipe could fill and block
            proc = subprocess.Popen(  # noqa: S603 - our own module, arguments we wrote
                [sys.executable, "-m", "virtime.agent.translate_worker", str(work / "spec.json")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errfile, env=env)
        offset = 0
        try:
            while proc.poll() is None:
                await anyio.sleep(_POLL_S)
                events, offset = _read_events(log, offset)
                for event in events:
                    if event.get("event") == "progress":
                        await on_progress(int(event["tiles_done"]), int(event["tiles_total"]))
        except BaseException:  # cancelled: interrupt the worker and let it settle, shielded
            with anyio.CancelScope(shield=True):
                await _stop(proc)
            raise
        stderr = (work / "stderr.txt").read_text(encoding="utf-8", errors="replace")
        if not result.is_file():
            tail = stderr.strip().splitlines()[-1:] or ["no message"]
            raise TranslationFailedError(f"{slide}: the translation worker stopped "
                                         f"(exit {proc.returncode}): {tail[0]}")
        outcome = json.loads(result.read_text(encoding="utf-8"))
        if not outcome.get("ok"):
            raise TranslationFailedError(str(outcome.get("error")))
        return dict(outcome["result"])
