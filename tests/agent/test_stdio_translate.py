"""``translate`` over stdio: progress notifications, a cancel mid-run that leaves a resumable
folder, the resumed run, and the slide's resources and tools afterwards."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("mcp")

from slow_engine import slow_engine_env  # noqa: E402

# Seconds each engine batch of the server's translation worker sleeps, so the cancel arrives
# mid-slide however fast the machine (the tiny model alone translates the slide in ~1 s).
BATCH_DELAY = 0.1

SIDE = 1536  # px at 0.5 um/px; 128-px tiles: a 12 x 12 grid, long enough to cancel mid-run
# The map at 0.5 um/px is written in bands of 256 rows, two tile rows each: cancelled after a third
# of the tiles, a band is finished, and the resumed run redoes only the rest; two thirds of the
# tiles are left, so the cancel arrives before the loop ends even on a fast machine.
CANCEL_AT = 0.35


def _files_outside(root: Path, out: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for dirpath, _, names in os.walk(root):
        if Path(dirpath) == out or out in Path(dirpath).parents:
            continue
        for n in names:
            st = os.stat(Path(dirpath) / n)
            found[str(Path(dirpath) / n)] = (st.st_size, st.st_mtime_ns)
    return found


@pytest.mark.slow
def test_translate_progress_cancel_resume(sandbox, mcp_run, tmp_path_factory) -> None:
    import anyio
    from PIL import Image

    from virtime.io import SlideFolder
    from virtime.simulate.slides import make_slide

    slide = Path(make_slide(sandbox.allow / "big.svs", SIDE, SIDE, mpp=0.5, seed=3))
    folder = SlideFolder(sandbox.out / "big")
    before = _files_outside(sandbox.root, sandbox.out)
    args = {"slide": "big.svs", "tile_size": 128, "output_mpp": 0.5}

    async def scenario(client):
        first: list[tuple[float, float | None]] = []
        enough = anyio.Event()

        async def on_first(done, total, message):
            first.append((done, total))
            if total and done >= CANCEL_AT * total:
                enough.set()

        finished = []
        async with anyio.create_task_group() as tg:
            async def call() -> None:
                finished.append(await client.call_tool("translate", args,
                                                       progress_callback=on_first))

            tg.start_soon(call)
            with anyio.fail_after(240):
                await enough.wait()
            tg.cancel_scope.cancel()  # the SDK sends notifications/cancelled
        with anyio.fail_after(120):  # the interrupted worker settles and lets go of the folder
            while folder.lock.exists():
                await anyio.sleep(0.1)
        partial = {"done": folder.is_done(), "manifest": folder.zarr_manifest.is_file()}

        second: list[tuple[float, float | None]] = []

        async def on_second(done, total, message):
            second.append((done, total))

        result = await client.call_tool("translate", args, progress_callback=on_second)
        thumb = await client.read_resource("virtime://slides/big/thumbnail")
        cd8 = await client.read_resource("virtime://slides/big/channels/CD8")
        feats = await client.read_resource("virtime://slides/big/features")
        bad = await client.call_tool("translate", {"slide": "../outside.svs"})
        view = await client.call_tool("view_url", {"slide_folder": str(folder.path)})
        table = pd.read_parquet(folder.features_file)  # as the translation wrote it
        recomputed = await client.call_tool("slide_features", {"slide_folder": "../out/big"})
        merged = await client.call_tool("merge_features", {"output_root": str(sandbox.out)})
        over_budget = await client.call_tool("translate", {"slide": "small.svs"})
        return (finished, first, partial, second, result, thumb, cd8, feats, bad, view, table,
                recomputed, merged, over_budget)

    (finished, first, partial, second, result, thumb, cd8, feats, bad, view, table, recomputed,
     merged, over_budget) = mcp_run(sandbox.server_args("--batch-size", "4", "--max-slides", "1"),
                                    scenario,
                                    slow_engine_env(tmp_path_factory.mktemp("site"), BATCH_DELAY))

    assert not finished  # cancelled before it returned
    assert first and CANCEL_AT * first[0][1] <= first[-1][0] < first[0][1]
    assert partial == {"done": False, "manifest": True}  # interrupted, resumable

    assert not result.is_error, result.content
    got = result.structured_content
    assert got["resumed"] is True and got["output_folder"] == str(folder.path.resolve())
    summary = json.loads(folder.summary_file.read_text())
    assert summary["status"] == "done" and got["summary"]["tiles_done"] == summary["tiles_done"]
    # the resumed run translated only the tiles of unfinished bands
    total = first[0][1]
    assert second and second[-1][1] < total
    assert summary["tiles_done"] == total  # every tissue tile is in the finished table
    prov = got["provenance"]
    assert prov["input_sha256"] == {str(slide.resolve()):
                                    hashlib.sha256(slide.read_bytes()).hexdigest()}
    assert prov["model_hash"] == summary["model_hash"]
    assert prov["settings"]["tile_size"] == 128

    png = thumb.contents[0]
    assert png.mime_type == "image/png"
    import base64

    with Image.open(io.BytesIO(base64.b64decode(png.blob))) as img, \
            Image.open(folder.thumbnail) as stored:
        assert max(img.size) <= 1024  # the server's --max-image-px default
        assert img.size == stored.size or max(img.size) == 1024
    assert cd8.contents[0].mime_type == "image/jpeg"
    assert base64.b64decode(cd8.contents[0].blob)[:2] == b"\xff\xd8"  # a JPEG
    row = json.loads(feats.contents[0].text)["features"][0]
    assert row["CD8.density"] == pytest.approx(float(table["CD8.density"].iloc[0]))
    # recomputed from the stored map, the densities equal those the translation streamed
    assert not recomputed.is_error, recomputed.content
    dens = recomputed.structured_content["densities"]
    assert dens and all(v == pytest.approx(float(table[k].iloc[0]), abs=1e-9)
                        for k, v in dens.items())
    assert not merged.is_error, merged.content
    assert merged.structured_content["slide_ids"] == ["big"]
    assert pd.read_parquet(merged.structured_content["table"])["CD8.density"].tolist() == \
        pytest.approx(table["CD8.density"].tolist())
    assert over_budget.is_error and "--max-slides" in over_budget.content[0].text

    assert bad.is_error and "refused" in bad.content[0].text
    url = view.structured_content["url"]
    assert url.startswith("http://127.0.0.1:")
    assert _files_outside(sandbox.root, sandbox.out) == {
        **before, str(slide): before[str(slide)]}  # the new slide was made before; nothing else
