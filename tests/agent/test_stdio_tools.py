"""``virtime mcp`` over stdio, driven by the MCP SDK's own client: tools, slide_info with its
provenance, refused paths (the server stays up), the prompt, and no write outside --output."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

pytest.importorskip("mcp")

EXPECTED_TOOLS = {"list_slides", "slide_info", "translate", "slide_features", "merge_features",
                  "associate", "survival", "report", "view_url"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` outside ``skip``: (size, mtime_ns)."""
    files = {}
    for dirpath, _, names in os.walk(root):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            continue
        for n in names:
            st = os.stat(Path(dirpath) / n)
            files[str(Path(dirpath) / n)] = (st.st_size, st.st_mtime_ns)
    return files


@pytest.mark.slow
def test_tools_slide_info_and_refused_paths(sandbox, mcp_run) -> None:
    outside = sandbox.root / "secret.csv"
    outside.write_text("patient_id\nP1\n")
    (sandbox.allow / "link.svs").symlink_to(sandbox.slide.parent.parent / "secret.csv")
    before = _tree(sandbox.root, sandbox.out)

    async def scenario(client):
        listed = (await client.list_tools()).tools
        tools = {t.name for t in listed}
        # each publishes its result's shape, provenance included
        assert all("provenance" in t.output_schema["required"] for t in listed)
        info = await client.call_tool("slide_info", {"path": "small.svs", "target_mpp": 0.5,
                                                     "tile_size": 128})
        bad = {}
        for name, path in (("traversal", "../secret.csv"), ("symlink", "link.svs"),
                           ("missing", "nope.svs"), ("absolute", str(outside))):
            bad[name] = await client.call_tool("slide_info", {"path": path})
            # the server is still up and answers the next call
            again = await client.call_tool("list_slides", {"folder": "."})
            assert not again.is_error
        writes = [await client.call_tool("merge_features", {"output_root": str(sandbox.out),
                                                            "output": out})
                  for out in ("../escape.parquet", str(sandbox.root / "abs.parquet"))]
        prompt = await client.get_prompt("study_cohort", {"slides_folder": "slides",
                                                          "clinical_table": "clinical.csv"})
        return tools, info, bad, writes, prompt

    tools, info, bad, writes, prompt = mcp_run(sandbox.server_args(), scenario)
    assert tools == EXPECTED_TOOLS

    assert not info.is_error
    got = info.structured_content
    assert (got["levels"][0]["width"], got["levels"][0]["height"]) == (768, 512)  # as made
    assert got["mpp"] == pytest.approx(0.5)
    # 768 x 512 px at 0.5 um/px, 128-px tiles at 0.5 um/px: a 6 x 4 grid
    assert got["tiling"]["grid_tiles"] == 24
    prov = got["provenance"]
    assert prov["input_sha256"] == {str(sandbox.slide.resolve()): _sha256(sandbox.slide)}
    assert prov["model_hash"] == _sha256(sandbox.weights)
    assert prov["settings"]["tile_size"] == 128
    from virtime import __version__

    assert prov["virtime_version"] == __version__

    for name, result in bad.items():
        assert result.is_error, name
    text = {k: r.content[0].text for k, r in bad.items()}
    assert "../secret.csv: refused, outside the folders this server may read" in text["traversal"]
    assert "link.svs: refused" in text["symlink"] and "secret.csv" in text["symlink"]
    assert "nope.svs: no such file" in text["missing"]
    assert "refused" in text["absolute"]

    assert all(w.is_error and "outputs go only under" in w.content[0].text for w in writes)
    assert _tree(sandbox.root, sandbox.out) == before  # nothing written or touched outside --output

    words = prompt.messages[0].content.text
    assert "model prediction" in words
    order = [words.index(t) for t in ("translate", "merge_features", "associate", "survival")]
    assert order == sorted(order)
    assert "review" in words.strip().splitlines()[-1] or "review" in words[-300:]
