"""One slide's translation in its own process: ``python -m virtime.agent.translate_worker SPEC``.

The MCP ``translate`` tool runs each translation here rather than on a server thread because a
thread cannot be stopped: cancelling the tool sends this process SIGINT, :func:`virtime.translate`
unwinds as it does on Ctrl-C (the partial canvas and tile journal stay resumable), and the
server stays responsive whatever the translation does. Progress reaches the server through the
translation's own JSON-lines log (``TranslateConfig.log_json``).

SPEC is a JSON file: ``{"slide", "out", "weights" (or null: demo model), "config" (flat
TranslateConfig keywords), "result"}``; the result (or the error) is written to ``result``.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

__all__ = ["main"]


def _run(spec: dict) -> dict:
    import virtime
    from virtime.models import load_demo

    model = virtime.load_model(spec["weights"]) if spec.get("weights") else load_demo()
    config = virtime.TranslateConfig(**spec["config"])
    result = virtime.translate(spec["slide"], model, spec["out"], config)
    return {"slide_id": result.slide_id, "output_dir": str(result.output_dir),
            "skipped": result.skipped, "tiles_done": result.tiles_done,
            "tiles_failed": result.tiles_failed, "seconds": result.seconds,
            "features_refreshed": result.features_refreshed}


def main(argv: list[str] | None = None) -> int:
    """Runs the SPEC file's translation; exit 0 done, 2 a virtime error, 130 interrupted."""
    from virtime.errors import VirtimeError
    from virtime.io import atomic_write_json

    # The server cancels by SIGINT. A server started with SIGINT ignored (a background job, nohup,
    # some agent hosts) hands SIG_IGN down to this process, and Python then never raises
    # KeyboardInterrupt: the cancel would be lost and the translation would run to its end.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    spec_path = Path((argv if argv is not None else sys.argv[1:])[0])
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    try:
        outcome = {"ok": True, "result": _run(spec)}
        code = 0
    except VirtimeError as exc:
        outcome, code = {"ok": False, "error": str(exc)}, 2
    except KeyboardInterrupt:
        outcome, code = {"ok": False, "error": "cancelled", "cancelled": True}, 130
    atomic_write_json(spec["result"], outcome)
    return code


if __name__ == "__main__":
    sys.exit(main())
