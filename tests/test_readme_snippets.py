"""The README and docs/*.md as a newcomer meets them (issues 17, 27): every Python snippet runs
(against a real control server or a real Consul agent where it needs one), every concrete
``python3 -m sidecar|examples.kv`` command line parses with the real parsers, every path they
cite exists, every script they name exists, and ``scripts/fleet`` / ``scripts/demo`` run and
stop cleanly from a fresh clone of the committed tree. (The README's by-hand block is run as
printed by tests/test_readme_byhand.py.)

A new Python snippet in a document that this file does not know fails
``test_every_python_snippet_is_executed`` until it is given a runner here."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest


ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
#: the README and every document under docs/ (the README links them; they moved out of it)
DOCS = {"README.md": README} | {f"docs/{p.name}": p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}


def code_blocks(text: str | None = None) -> list[tuple[int, str]]:
    """Indented (4-space) code blocks of one document, or of all of them: (first line number, text)."""
    if text is None:
        return [b for doc in DOCS.values() for b in code_blocks(doc)]
    out, cur, start, prev_blank = [], [], 0, True
    for i, line in enumerate(text.splitlines(), 1):
        if line.startswith("    ") and (cur or prev_blank):
            if not cur:
                start = i
            cur.append(line[4:])
        elif cur and not line.strip():
            cur.append("")
        else:
            if cur:
                out.append((start, "\n".join(cur).rstrip()))
                cur = []
        prev_blank = not line.strip()
    if cur:
        out.append((start, "\n".join(cur).rstrip()))
    return out


def python_blocks() -> list[tuple[int, str]]:
    return [(n, b) for n, b in code_blocks() if re.search(r"^(from \w+ import|import \w+)", b, re.M)]


def _kind(block: str) -> str:
    if "open_consul" in block:
        return "consul"
    if "aiohttp_middleware" in block:
        return "commit_point"
    if "PlacementTable(" in block:
        return "table"
    if "sqlite_fence" in block:
        return "fence"
    return "unknown"


def test_every_python_snippet_is_executed():
    kinds = [(n, _kind(b)) for n, b in python_blocks()]
    assert kinds and all(k != "unknown" for _, k in kinds), f"README snippets without a runner here: {kinds}"
    assert {k for _, k in kinds} == {"consul", "commit_point", "table", "fence"}


def _block(kind: str) -> str:
    (block,) = [b for _, b in python_blocks() if _kind(b) == kind]
    return block


def test_table_snippet_runs():
    ns: dict = {"__name__": "readme"}
    exec(compile(_block("table"), "README:table", "exec"), ns)
    assert not ns["table"].admit_write("tenant-1", ns["at"].epoch)


def test_fence_snippet_imports_once_and_refuses_a_lower_token():
    """The mover-hook snippet, as a handler body: a token records, a lower one is the 409."""
    import sqlite3
    import textwrap

    from gate import FENCE_HEADER

    src = "def handler(request, partition, conn, rows):\n" + textwrap.indent(_block("fence"), "    ") + "\n    return None\n"
    ns: dict = {"__name__": "readme", "UPSERT": "INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)"}
    exec(compile(src, "README:fence", "exec"), ns)
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")

    class Req:
        def __init__(self, token: int) -> None:
            self.headers = {FENCE_HEADER: str(token)}

    assert ns["handler"](Req(7), "t1", conn, [("k", "new")]) is None
    refused = ns["handler"](Req(3), "t1", conn, [("k", "stale")])
    assert refused is not None and refused.status == 409 and str(refused.body["type"]).endswith("stale-mover")
    assert conn.execute("SELECT v FROM kv").fetchall() == [("new",)]   # the stale rows never landed


@pytest.mark.consul
def test_open_consul_snippet_runs_as_written(consul_agent, kv_prefix, capsys):
    code = _block("consul").replace("http://127.0.0.1:8500", consul_agent.url).replace('"epochgate/"',
                                                                                        repr(kv_prefix))
    exec(compile(code, "README:open_consul", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("PlacementAt(") and "stale_epoch" in out[1]
    assert out[2] == "['set', 'begin_migration', 'abort_migration']"


async def test_commit_point_snippet_serves_and_refuses_a_stale_write():
    from aiohttp import web

    from gate import EmbeddedStore, PlacementTable
    from sidecar.api.start import start_control_server

    table = PlacementTable({"tenant-1": "a"})
    control = await start_control_server("127.0.0.1:0", store=EmbeddedStore(table, {}), source=table)
    ns: dict = {"__name__": "readme"}
    runner = None
    try:
        code = _block("commit_point").replace("127.0.0.1:50051", f"127.0.0.1:{control.epochgate_port}")
        exec(compile(code, "README:commit_point", "exec"), ns)
        runner = web.AppRunner(ns["app"])
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/kv/greeting"
        epoch = int(table.get("tenant-1").epoch)
        async with aiohttp.ClientSession() as http:
            stamp = {"X-Partition": "tenant-1", "X-Placement-Epoch": str(epoch)}
            async with http.put(url, data="hello", headers=stamp) as r:
                assert (r.status, await r.text()) == (200, "stored\n")
            table.begin_migration("tenant-1", "b")          # the epoch moves on
            async with http.put(url, data="stale", headers=stamp) as r:
                assert r.status == 503 and (await r.json())["type"].endswith("stale-epoch")
        assert ns["db"].execute("SELECT v FROM kv WHERE k='greeting'").fetchone() == ("hello",)  # rolled back
    finally:
        if runner is not None:
            await runner.cleanup()
        await control.stop(0)


#: repository paths as the documents cite them (in prose, tables and code alike): a top-level
#: directory's path, or a top-level file; not preceded by a path character (so
#: /var/lib/grafana/dashboards/… is not read as grafana/…)
PATH_RE = re.compile(r"(?<![\w./$-])((?:gate|sidecar|tests|scripts|bench|deploy|grafana|examples|docs|\.ci)/[\w./*-]*"
                     r"|(?:README|DESIGN|ARCHITECTURE)\.md|Dockerfile|\.dockerignore|pyproject\.toml|setup\.py)")
LINK_RE = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
#: files linked from the README's "More" list that other pieces of work add (the lead merges
#: them); they are checked like any other path once they exist
PENDING: set[str] = set()
#: cited things that look like paths and are not files of the repository
NOT_PATHS = {"grafana/grafana": "the Grafana Docker image", "sidecar/_compiled.json": "a build output (git-ignored)",
             "gate/_compiled.json": "a build output (git-ignored)"}


def cited_paths() -> list[tuple[str, str]]:
    """(document, path relative to the repository) for every path and relative link cited."""
    out = []
    for doc, text in DOCS.items():
        for m in PATH_RE.finditer(text):
            out.append((doc, m.group(1).rstrip(".")))
        for m in LINK_RE.finditer(text):
            target = m.group(1)
            if re.match(r"^[a-z]+:", target):
                continue   # https://…, mailto:
            out.append((doc, os.path.normpath(os.path.join(os.path.dirname(doc), target))))
    return out


def test_every_path_the_documents_cite_exists():
    cited = cited_paths()
    assert len(cited) > 150 and {d for d, _ in cited} >= {"README.md", "docs/fleet.md", "docs/figures.md"}
    missing = sorted({f"{doc}: {path}" for doc, path in cited
                      if not list(ROOT.glob(path)) and path not in PENDING and path not in NOT_PATHS})
    assert not missing, "\n".join(missing)


def test_the_path_check_catches_a_wrong_path():
    """The old README's wrong path (issue 27) is the kind of citation it reports."""
    assert [m.group(1) for m in PATH_RE.finditer("the barrier (`sidecar/_ackwatch.py`), /var/lib/grafana/x")] \
        == ["sidecar/_ackwatch.py"]
    assert not list(ROOT.glob("sidecar/_ackwatch.py")) and list(ROOT.glob("gate/_ackwatch.py"))


def _command_lines() -> list[str]:
    lines = []
    for _, block in code_blocks():
        for raw in block.replace("\\\n", " ").splitlines():
            line = re.split(r"  #| \d?> ", raw)[0].strip().rstrip("&").strip()   # no comment, no redirection
            if re.match(r"^python3? -m (sidecar|examples\.kv)\b", line):
                lines.append(line)
    return lines


def test_every_concrete_command_line_parses():
    from examples.kv.__main__ import _parser as kv_parser
    from sidecar import _config
    from sidecar.control import cli as _cli
    from sidecar.control import controller_main as _controller
    from sidecar.__main__ import _CLI

    parsed = 0
    for line in _command_lines():
        if re.search(r"[\[\]|…]|\bP\b|\bNODE\b|\bNAME\b|\bURL\b|\bID\b", line):
            continue   # a synopsis, not a command
        split = shlex.split(line.replace("$D", "/tmp/d"))
        module, words = split[2], split[3:]
        if module == "examples.kv":
            kv_parser().parse_args(words)
        elif words and words[0] == "controller":
            _controller._parse(words[1:])
        elif words and words[0] == "reshard":
            from sidecar.control import reshard_cli

            reshard_cli.parser().parse_args(words[1:])
        elif words and words[0] in _CLI:
            _cli._build_parser().parse_args(words)
        else:
            try:
                _config.parse_args(words, environ={})
            except _config.ConfigError as exc:   # parsed: the example's files are not on this machine
                assert "cannot read" in str(exc), (line, exc)
        parsed += 1
    assert parsed >= 10, _command_lines()


def test_every_named_script_exists_and_is_executable():
    names = set(re.findall(r"scripts/[\w-]+", "\n".join(b for _, b in code_blocks())))
    assert {"scripts/demo", "scripts/test", "scripts/fleet", "scripts/get-consul", "scripts/gen-protos"} <= names
    assert {"scripts/demo", "scripts/test", "scripts/fleet"} <= set(re.findall(r"scripts/[\w-]+", README))
    for name in names:
        assert os.access(ROOT / name, os.X_OK), name


def _clone(tmp_path: Path) -> Path:
    dst = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dst)], check=True, timeout=60)
    return dst


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("EPOCHGATE_", "FLEET_", "PYTHONPATH"))
            } | {"PYTHON": sys.executable, "EPOCHGATE_SKIP_INSTALL": "1",   # run from the clone, install nothing
                 **({"EPOCHGATE_CACHE": os.environ["EPOCHGATE_CACHE"]} if "EPOCHGATE_CACHE" in os.environ else {})}


def _port_run_free(n: int) -> int:
    """A base port with n consecutive free ports after it, below the ephemeral range (a busy
    machine's outgoing connections can take a port there between our check and the bind)."""
    import random

    for _ in range(200):
        base = random.randrange(20000, 32000)
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no run of free ports")


@pytest.mark.slow
@pytest.mark.consul
@pytest.mark.timeout(260)
def test_fleet_script_runs_and_stops_cleanly_from_a_fresh_clone(tmp_path, consul_agent):
    clone = _clone(tmp_path)
    env = _env() | {"FLEET_CONSUL_PORT": str(_port_run_free(4)), "FLEET_NODE_PORT": str(_port_run_free(3)),
                    "FLEET_PROXY_PORT": str(_port_run_free(1)), "FLEET_CONTROL_PORT": str(_port_run_free(2)),
                    "FLEET_ADMIN_PORT": str(_port_run_free(2))}
    if consul_agent is not None:   # the same binary the fixtures use (on PATH or fetched)
        env["PATH"] = f"{Path(consul_agent.args[0]).parent}:{env.get('PATH', '')}"
    # Its own process group, so a stuck run is stopped whole (the script's Consul, nodes,
    # sidecar and controller too) and what it printed so far is shown.
    proc = subprocess.Popen([str(clone / "scripts" / "fleet"), "--check"], cwd=clone, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=200)   # about 12 s here when the machine is quiet
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        pytest.fail(f"scripts/fleet --check did not finish in 200 s; its output:\n{out[-4000:]}")
    assert proc.returncode == 0, out[-3000:]
    assert "would go" in out and " completed: tenant-1 a→b" in out and "drain c completed" in out
    assert "fleet: check passed" in out and "fleet: stopped; removed" in out and "Traceback" not in out
    assert not list(Path(clone).glob("a")) and not list(Path(clone).glob("b"))   # nothing written into the tree


@pytest.mark.slow
def test_demo_runs_a_migration_with_a_copy_from_a_fresh_clone(tmp_path):
    clone = _clone(tmp_path)
    # its own ports (the defaults may be taken on a busy machine): the script moves them all
    env = _env() | {"DEMO_PROXY_PORT": str(_port_run_free(1)), "DEMO_ADMIN_PORT": str(_port_run_free(1)),
                    "DEMO_CONTROL_PORT": str(_port_run_free(1)), "DEMO_NODE_PORT": str(_port_run_free(2))}
    proc = subprocess.run([str(clone / "scripts" / "demo"), "--check"], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=100)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "would go" in out and " cutover bytes=" in out and " acked bytes=" in out
    assert re.search(r"completed: tenant-1 a→b, \d+ B copied", out) and "node b now holds key-2 = value-2" in out


def test_readme_helpers_see_the_blocks():
    assert len(code_blocks(README)) > 6 and len(code_blocks()) > 20 and len(python_blocks()) == 4
    assert asyncio.iscoroutinefunction(test_commit_point_snippet_serves_and_refuses_a_stale_write)


def test_the_readme_is_a_five_minute_read():
    """Issue 27: 1,295 lines, a third of them benchmark narrative; the details live in docs/."""
    lines = README.splitlines()
    assert len(lines) <= 300, len(lines)
    assert not re.search(r"\b(p99|µs|MiB)\b", README), "figures belong in docs/figures.md and the docs"


def test_counts_the_documents_state_are_current():
    """The compiled-module count the docs quote is sidecar/_build.py's (it was 16 against 17)."""
    from sidecar._build import COMPILED

    quoted = {int(n) for text in DOCS.values() for n in re.findall(r"build=compiled \((\d+) modules\)", text)}
    assert quoted == {len(COMPILED)}, (quoted, len(COMPILED))


def repeated_phrases(text: str, words: int = 8) -> list[str]:
    """Runs of `words` words said twice in one document's prose (code blocks and tables left out)."""
    prose = "\n".join(ln for ln in text.splitlines() if not ln.startswith(("    ", "|")))   # no code, no tables
    toks = re.sub(r"\s+", " ", prose).split(" ")
    seen: dict[str, int] = {}
    out = []
    for k in range(len(toks) - words + 1):
        gram = " ".join(toks[k:k + words])
        if gram in seen and k - seen[gram] >= words:   # not an overlap of itself
            out.append(gram)
        seen.setdefault(gram, k)
    return out


def test_no_sentence_is_said_twice_in_one_document():
    """The old README said "All take `--control HOST:PORT` (env `EPOCHGATE_CONTROL`), `--token`
    (env `EPOCHGATE_TOKEN`)" twice in a row."""
    repeated = [f"{doc}: {r}" for doc, text in DOCS.items() for r in repeated_phrases(text)[:1]]
    assert not repeated, "\n".join(repeated)
