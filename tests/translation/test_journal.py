"""The partial tile table is an append-only journal (rows written once), replayed on resume."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd

from virtime.translation.journal import TileJournal, read_journal


def test_append_and_replay_exactly(tmp_path, rng):
    rows = [{"tile": i, "x": 3 * i, "y": 0, "tissue_fraction": float(rng.random()),
             "CD8.mean_probability": float(rng.random())} for i in range(7)]
    rows.append({"tile": 7, "x": 1, "y": 2, "failure_reason": "read error: boom"})
    rows.append({"tile": 8, "x": 1, "y": 2, "tissue_fraction": math.nan})
    j = TileJournal(tmp_path / "j.jsonl")
    j.start(rows[:2])
    j.append(rows[:5])
    j.append(rows[:5], sync=True)  # nothing new: no duplicate lines
    j.append(rows, sync=True)
    back = read_journal(tmp_path / "j.jsonl")
    assert back[:8] == rows[:8] and math.isnan(back[8]["tissue_fraction"])
    assert len((tmp_path / "j.jsonl").read_text().splitlines()) == len(rows)


def test_torn_last_line_is_ignored(tmp_path):
    j = TileJournal(tmp_path / "j.jsonl")
    j.start([{"tile": 0}, {"tile": 1}])
    with open(tmp_path / "j.jsonl", "a") as fh:
        fh.write('{"tile": 2, "x"')  # a crash mid-append
    assert read_journal(tmp_path / "j.jsonl") == [{"tile": 0}, {"tile": 1}]


def test_resume_reads_an_older_parquet_snapshot(tmp_path):
    from virtime.io.slide_folder import SlideFolder
    from virtime.translation.resume import load_partial_tiles

    pd.DataFrame({"tile": [0, 1], "x": [0, 5]}).to_parquet(
        tmp_path / SlideFolder.LEGACY_PARTIAL_TILES)
    assert load_partial_tiles(tmp_path, force=False) == [{"tile": 0, "x": 0},
                                                          {"tile": 1, "x": 5}]
    assert load_partial_tiles(tmp_path, force=True) is None


def test_translation_appends_each_row_once(small_slide, tiny_model, fast_config, tmp_path,
                                           monkeypatch):
    import virtime

    lines: list[int] = []  # journal lines each append added, counted in the file itself
    last: list[list[dict]] = [[]]
    real = TileJournal.append

    def spy(self, rows, sync=False):
        before = self.path.read_bytes().count(b"\n")
        real(self, rows, sync)
        lines.append(self.path.read_bytes().count(b"\n") - before)
        last[0] = read_journal(self.path)  # the journal as it stood at its last append

    monkeypatch.setattr(TileJournal, "append", spy)
    result = virtime.translate(small_slide, tiny_model, tmp_path,
                               dataclasses.replace(fast_config, features=False))
    tiles = pd.read_parquet(result.output_dir / "tiles.parquet")
    assert sum(lines) == len(tiles) == result.tiles_done > 0  # each row once, none rewritten
    assert sorted(int(r["tile"]) for r in last[0]) == sorted(tiles["tile"].astype(int))
    assert not list(tmp_path.glob("*/.tiles.partial*"))  # removed when the slide is done
