"""Every relative link and image in README.md and docs/**/*.md resolves.

A link's file part must name a file or folder of the checkout (relative to the page, or to
the repository root when it starts with ``/``, as GitHub resolves them); a ``#anchor`` on a
Markdown page must be one of that page's headings, spelt as GitHub spells heading anchors
(lower case, punctuation dropped, spaces to hyphens, ``-1``, ``-2`` ... for repeats).
Links with a scheme (``https:``, ``mailto:``) are not fetched. Code (fenced and indented
blocks, inline code spans) is skipped, so a command such as ``[file:///path]`` is never
read as a link.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HTML = re.compile(r"<(?:img|a)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", re.IGNORECASE)
HTML_ANCHOR = re.compile(r"<a\b[^>]*?\b(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced and indented code blocks."""
    out, fence, in_indented, prev_blank, in_list = [], None, False, True, False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        if fence:
            if stripped.startswith(fence):
                fence = None
            continue
        if stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            continue
        blank = not stripped
        indented = line.startswith(("    ", "\t"))
        if indented and not blank and (in_indented or (prev_blank and not in_list)):
            in_indented = True
            prev_blank = False
            continue
        if not blank:
            in_indented = False
            in_list = bool(LIST_ITEM.match(line)) or (in_list and line[:1] == " ")
        prev_blank = blank
        out.append((number, line))
    return out


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading's text: markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor GitHub gives the page's headings (repeats numbered), and explicit <a name=...>."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(page.read_text(encoding="utf-8")):
        heading = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = github_anchor(heading.group(1))
            found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
        found.update(HTML_ANCHOR.findall(line))
    return found


def links(page: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link, image and reference definition of the page."""
    out = []
    for number, line in prose_lines(page.read_text(encoding="utf-8")):
        line = re.sub(r"(`+).*?\1", "", line)  # a code span is never a link
        targets = INLINE.findall(line) + HTML.findall(line)
        reference = REFERENCE.match(line)
        if reference:
            targets.append(reference.group(1))
        out += [(number, t) for t in targets]
    return out


def shown(path: Path, root: Path) -> str:
    """The path relative to the checkout when it is inside it, else as it is."""
    resolved, top = path.resolve(), root.resolve()
    return str(resolved.relative_to(top)) if resolved.is_relative_to(top) else str(path)


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """One message per relative link of ``page`` whose file or heading does not exist."""
    problems = []
    name = page.relative_to(root)
    for number, target in links(page):
        if not target or SCHEME.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        path_part = unquote(path_part)
        if not path_part:
            dest = page
        elif path_part.startswith("/"):
            dest = root / path_part.lstrip("/")
        else:
            dest = page.parent / path_part
        if not dest.exists():
            problems.append(f"{name}:{number}: link {target!r}: no file {shown(dest, root)}")
            continue
        if anchor and dest.is_file() and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            problems.append(f"{name}:{number}: link {target!r}: no heading #{anchor} in {shown(dest, root)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_and_image_resolves(page):
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_readme_is_a_front_door_with_a_committed_figure():
    readme = ROOT / "README.md"
    lines = readme.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; at most 200 (the rest belongs in docs/)"
    images = [t for _, t in links(readme) if not SCHEME.match(t) and re.search(r"\.(png|jpe?g|gif|svg)$", t)]
    assert any((ROOT / t).is_file() for t in images), "README.md shows no figure of the checkout"
    text = readme.read_text(encoding="utf-8")
    pages = [*(ROOT / "docs").glob("*.md"), *(ROOT / "docs" / "results").glob("*.md")]
    unlinked = sorted(str(p.relative_to(ROOT)) for p in pages if f"({p.relative_to(ROOT).as_posix()}" not in text)
    assert not unlinked, f"README.md does not link {unlinked}"


def test_the_checker_reports_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Many seeds at once (`trainer.seed_batch`)\n\n## Notes\n\n## Notes\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md#many-seeds-at-once-trainerseed_batch) [ok](docs/a.md#notes-1) [ok](#top)\n"
        "# Top\n\n"
        "    [not a link](nowhere.md) in an indented code block\n\n"
        "`[nor](this.md)` ![gone](docs/missing.png) [bad](docs/a.md#no-such-heading) [web](https://example.org/x)\n")
    problems = broken_links(page, root=tmp_path)
    assert problems == [
        "README.md:6: link 'docs/missing.png': no file docs/missing.png",
        "README.md:6: link 'docs/a.md#no-such-heading': no heading #no-such-heading in docs/a.md",
    ]


@pytest.mark.parametrize("argv", [[], ["--help"]])
def test_gencompare_help_lists_the_commands_and_names_the_readme(argv, monkeypatch, capsys):
    from gencompare import cli

    monkeypatch.setattr(sys, "argv", ["gencompare", *argv])
    cli.main()
    out = capsys.readouterr().out
    commands = {line.split()[0] for line in out.splitlines() if line.startswith("  ") and line.split()}
    assert {"train", "eval", "sample", "compare"} <= commands, out
    assert str(ROOT / "README.md") in out, out  # the checkout's README, by its path
