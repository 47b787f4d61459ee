"""The guardrails in-process: path checks, the per-session budget, result size limits,
provenance hashes, the HTTP token gate and the prompt's wording."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from virtime.agent import AgentConfig, PathGuard, PathRefusedError
from virtime.errors import InputDataError, InvalidArgumentError


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    allow, out, other = tmp_path / "allow", tmp_path / "out", tmp_path / "other"
    for d in (allow / "sub", other):
        d.mkdir(parents=True)
    (allow / "sub" / "a.svs").write_bytes(b"slide")
    (other / "secret.txt").write_text("no")
    (allow / "escape").symlink_to(other, target_is_directory=True)  # a folder link leaving
    (allow / "inside.svs").symlink_to(allow / "sub" / "a.svs")  # a link that stays inside
    return {"allow": allow, "out": out, "other": other, "root": tmp_path}


def test_reads_only_under_the_roots(tree) -> None:
    guard = PathGuard((tree["allow"],), tree["out"])
    assert tree["out"].is_dir()  # made at start
    assert guard.readable("sub/a.svs") == (tree["allow"] / "sub" / "a.svs").resolve()
    assert guard.readable("inside.svs") == (tree["allow"] / "sub" / "a.svs").resolve()
    assert guard.readable(tree["out"], kind="folder") == tree["out"].resolve()
    for bad in ("../other/secret.txt", "sub/../../other/secret.txt", "escape/secret.txt",
                str(tree["other"] / "secret.txt"), "/etc/passwd"):
        with pytest.raises(PathRefusedError, match="refused, outside the folders"):
            guard.readable(bad)
    with pytest.raises(InputDataError, match="nope.svs: no such file"):
        guard.readable("nope.svs")
    with pytest.raises(InputDataError, match="not a file"):
        guard.readable("sub")
    # refused before its existence is revealed
    with pytest.raises(PathRefusedError):
        guard.readable("../other/missing.txt")


def test_writes_only_under_out(tree) -> None:
    guard = PathGuard((tree["allow"],), tree["out"])
    assert guard.writable("t/assoc.parquet") == tree["out"].resolve() / "t" / "assoc.parquet"
    (tree["out"] / "link").symlink_to(tree["other"], target_is_directory=True)
    for bad in ("../x.parquet", str(tree["allow"] / "x.parquet"), "link/x.parquet", ".",
                str(tree["out"])):
        with pytest.raises(PathRefusedError, match="outputs go only under"):
            guard.writable(bad)
    with pytest.raises(PathRefusedError, match="writes into the folder"):
        guard.output_folder(tree["allow"] / "sub")


def test_config_checks() -> None:
    with pytest.raises(InvalidArgumentError, match="--allow"):
        AgentConfig(allow=(), out=Path("o"))
    with pytest.raises(InvalidArgumentError, match="max_slides"):
        AgentConfig(allow=(Path("a"),), out=Path("o"), max_slides=0)


def test_budget_counts_each_slide_once_per_session(tree) -> None:
    from virtime.agent.state import AgentState, BudgetExceededError, session_key

    state = AgentState(AgentConfig(allow=(tree["allow"],), out=tree["out"], max_slides=2))
    one = session_key(None)  # stdio: the server process is the session
    two = session_key({"content-type": "application/json", "Mcp-Session-Id": "abc"})
    assert one == session_key({"accept": "*/*"}) != two
    assert state.charge_slide(one, Path("/s/a.svs")) == 1
    assert state.charge_slide(one, Path("/s/a.svs")) == 1  # a resume is not a new slide
    assert state.charge_slide(one, Path("/s/b.svs")) == 0
    with pytest.raises(BudgetExceededError, match="c.svs: refused.*2 slide"):
        state.charge_slide(one, Path("/s/c.svs"))
    assert state.charge_slide(two, Path("/s/c.svs")) == 1  # another session, its own budget


def test_results_carry_provenance_and_fit_the_size_limit(tree) -> None:
    from virtime import __version__
    from virtime.agent.limits import table_rows
    from virtime.agent.state import AgentState

    state = AgentState(AgentConfig(allow=(tree["allow"],), out=tree["out"],
                                   max_result_bytes=4000))
    frame = pd.DataFrame({"feature": [f"F{i}" for i in range(500)], "q": range(500)})
    frame.loc[0, "q"] = float("nan")
    slide = tree["allow"] / "sub" / "a.svs"
    got = state.result({"top": table_rows(frame, 500), "n": 500}, settings={"k": 1},
                       inputs=[slide], model_hash="abc")
    assert len(json.dumps(got)) <= 4000 and got["truncated"] is True
    assert got["top"] == table_rows(frame, len(got["top"]))  # a prefix, order kept
    assert got["top"][0]["q"] is None  # NaN is not JSON
    assert got["provenance"] == {"virtime_version": __version__, "model_hash": "abc",
                                 "settings": {"k": 1}, "input_sha256": {
                                     str(slide): hashlib.sha256(b"slide").hexdigest()}}
    small = state.result({"n": 1}, settings={}, inputs=[], model_hash="abc")
    assert "truncated" not in small
    # a changed file is hashed again
    slide.write_bytes(b"other slide")
    os.utime(slide, ns=(1, 1))
    again = state.result({}, settings={}, inputs=[slide], model_hash="abc")
    assert again["provenance"]["input_sha256"][str(slide)] == hashlib.sha256(
        b"other slide").hexdigest()


def test_default_model_hash_is_the_demo_weights(tree) -> None:
    from virtime.agent.state import AgentState
    from virtime.models import DEMO_WEIGHTS

    state = AgentState(AgentConfig(allow=(tree["allow"],), out=tree["out"]))
    assert state.model_hash == hashlib.sha256(DEMO_WEIGHTS.read_bytes()).hexdigest()


def test_token_gate_refuses_without_the_token() -> None:
    import asyncio

    from virtime.agent.http_transport import TokenGate

    reached = []

    async def app(scope, receive, send) -> None:
        reached.append(scope["path"])

    async def request(headers: list[tuple[bytes, bytes]]) -> int | None:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        await TokenGate(app, "s3cret")({"type": "http", "path": "/mcp", "headers": headers},
                                       None, send)
        return sent[0]["status"] if sent else None

    assert asyncio.run(request([])) == 401
    assert asyncio.run(request([(b"authorization", b"Bearer wrong")])) == 401
    assert reached == []
    assert asyncio.run(request([(b"authorization", b"Bearer s3cret")])) is None
    assert reached == ["/mcp"]


def test_study_cohort_prompt() -> None:
    from virtime.agent.prompts import study_cohort_text

    text = study_cohort_text("SLIDES", "clinical.csv", "does CD8 track MSI?")
    assert "SLIDES" in text and "clinical.csv" in text and "does CD8 track MSI?" in text
    assert "virtual multiplex immunofluorescence (mIF) is a model prediction" in text
    steps = [text.index(f"\n{i}. {tool}") for i, tool in
             ((2, "translate"), (3, "merge_features"), (4, "associate"), (5, "survival"))]
    assert steps == sorted(steps)
    last = text.strip().split("\n\n")[-1]
    assert "review" in last and "before any conclusion" in last
