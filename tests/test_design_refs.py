"""Every "DESIGN §N" reference in the repository resolves inside DESIGN.md.

The README, docstrings and comments cite the design as "DESIGN §N", "§N.M",
"§N rule K" and "§N \"Name\"". A clone must be able to follow each one, so
this test fails when a cited section, subsection, rule or named paragraph is
missing from the repository's own DESIGN.md.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "DESIGN.md"
SUFFIXES = {".py", ".md", ".proto", ".yml", ".yaml", ".toml", ".json", ""}

REF = re.compile(r'DESIGN §(\d+)(?:\.(\d+))?(?:–§(\d+))?(?: rules? (\d(?:[\d, –-]*\d)?))?(?: "([^"]+)")?')
ALSO = re.compile(r'DESIGN §\d+(?:\.\d+)?((?:, §\d+(?:\.\d+)?(?: "[^"]+")?)+)')


def _sections() -> dict[str, str]:
    """'5' → text of §5, '4.2' → text of §4.2."""
    text = DESIGN.read_text()
    out: dict[str, str] = {}
    for m in re.finditer(r"^(#{2,3}) (\d+(?:\.\d+)?)\.? .*$", text, re.M):
        start = m.end()
        nxt = re.compile(r"^#{2,%d} \d" % len(m.group(1)), re.M).search(text, start)
        out[m.group(2)] = text[start: nxt.start() if nxt else len(text)]
    return out


def _files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    return [ROOT / f for f in listed if Path(f).suffix in SUFFIXES and (ROOT / f).is_file()
            and not f.startswith("gate/pb/")]


def _refs() -> list[tuple[str, str, str | None, list[int], str | None]]:
    out = []
    for path in _files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        where = str(path.relative_to(ROOT))
        for m in REF.finditer(text):
            sec = m.group(1) + (f".{m.group(2)}" if m.group(2) else "")
            rules = [int(x) for x in re.findall(r"\d+", m.group(4) or "")]
            out.append((where, sec, m.group(3), rules, m.group(5)))
        for m in ALSO.finditer(text):
            for extra in re.finditer(r'§(\d+(?:\.\d+)?)(?: "([^"]+)")?', m.group(1)):
                out.append((where, extra.group(1), None, [], extra.group(2)))
    return out


def test_design_document_is_in_the_repository():
    assert DESIGN.is_file()
    assert (ROOT / "ARCHITECTURE.md").is_file()


def test_every_reference_resolves():
    sections = _sections()
    refs = _refs()
    assert len(refs) > 50, "the scan found too few references; is the pattern broken?"
    bad = []
    for where, sec, upto, rules, name in refs:
        body = sections.get(sec)
        if body is None:
            bad.append(f"{where}: §{sec} is not a section of DESIGN.md")
            continue
        if upto is not None and upto not in sections:
            bad.append(f"{where}: §{upto} is not a section of DESIGN.md")
        for k in rules:
            if not re.search(rf"^{k}\. \*\*", body, re.M):
                bad.append(f"{where}: §{sec} has no rule {k}")
        if name is not None and f"**{name}.**" not in body and f"**{name}**" not in body:
            bad.append(f'{where}: §{sec} has no paragraph "{name}"')
    assert not bad, "\n".join(bad)


def test_the_check_catches_a_dangling_reference():
    sections = _sections()
    assert "5" in sections and "4.2" in sections and "99" not in sections
    assert not re.search(r"^7\. \*\*", sections["5"], re.M)   # "§5 rule 7" would be reported
