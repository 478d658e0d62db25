"""The documentation's links hold: every relative link and image in README.md and docs/*.md names a file or folder
of the repository, and every `#anchor` (alone, or after a .md path) names a heading of its target, by GitHub's
slug rule. README.md is a front page of at most 250 lines that links every docs/*.md page.

Links inside fenced code blocks and inline code are not links, and external ones (http(s):, mailto:) are not
checked. A failure names the file, the line and the link."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 250

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target); text may hold one level of brackets ([`[data]`](#data)); the target ends at
# the first space (a title may follow) or at the closing parenthesis
_LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*(<[^>]*>|[^)\s]*)(?:\s+\"[^\"]*\")?\s*\)")
_EXTERNAL = re.compile(r"^(https?:|mailto:|ftp:)", re.IGNORECASE)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (github-slugger): lowercase; every character that is not a letter,
    a digit, a space, '-' or '_' removed (letters of any script kept); each space becomes '-'. Inline code marks,
    emphasis and link targets are markup, not text: only their text counts."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def unique_slugs(headings: list[str]) -> list[str]:
    """The anchors of a page's headings in order: a repeated slug gets -1, -2, ... (as GitHub numbers them)."""
    seen: dict[str, int] = {}
    out = []
    for heading in headings:
        slug = github_slug(heading)
        if slug in seen:
            while True:
                seen[slug] += 1
                candidate = f"{slug}-{seen[slug]}"
                if candidate not in seen:
                    break
            slug = candidate
        seen[slug] = 0
        out.append(slug)
    return out


def _prose_lines(text: str) -> list[tuple[int, str, str]]:
    """(line number, line with its inline code blanked out, line) for the lines outside fenced code blocks. The
    blanked line keeps every position, so a link found in it is read from the line as written."""
    out = []
    fence: str | None = None
    for number, line in enumerate(text.split("\n"), start=1):
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            continue
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(m.group(1)):].strip():
                fence = None
            continue
        out.append((number, _INLINE_CODE.sub(lambda m: "\0" * len(m.group(0)), line), line))
    return out


def headings(text: str) -> list[str]:
    """The ATX headings' text (outside code blocks), in order."""
    out = []
    fence: str | None = None
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            continue
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        h = _HEADING.match(line)
        if h:
            out.append(h.group(2))
    return out


def anchors(path: Path) -> set[str]:
    return set(unique_slugs(headings(path.read_text(encoding="utf-8"))))


@dataclass(frozen=True)
class Link:
    file: Path
    line: int
    text: str
    target: str
    image: bool

    def where(self, root: Path) -> str:
        return f"{self.file.relative_to(root).as_posix()}:{self.line}: {'!' if self.image else ''}[{self.text}]({self.target})"


def links(path: Path, text: str | None = None) -> list[Link]:
    """Every Markdown link and image of a file (its `text`, if given, instead of what is on disk)."""
    text = path.read_text(encoding="utf-8") if text is None else text
    out = []
    for number, masked, line in _prose_lines(text):
        for m in _LINK.finditer(masked):
            target = line[m.start(3):m.end(3)].strip("<>")
            out.append(Link(path, number, line[m.start(2):m.end(2)], target, bool(m.group(1))))
    return out


def resolve(link: Link) -> tuple[Path | None, str | None]:
    """(the file or folder a relative link names, or None for an anchor of its own page; the anchor or None)."""
    target, _, anchor = link.target.partition("#")
    path = (link.file.parent / unquote(target)).resolve() if target else None
    return path, (unquote(anchor) if link.target.count("#") else None)


def check_file(path: Path, root: Path, text: str | None = None) -> list[str]:
    """The problems of one Markdown file's links: a target missing or outside `root`, an empty link, an anchor
    that is no heading of its page. Each names the file, the line and the link."""
    problems = []
    own_text = path.read_text(encoding="utf-8") if text is None else text
    for link in links(path, own_text):
        if _EXTERNAL.match(link.target):
            continue
        if not link.target:
            problems.append(f"{link.where(root)}: empty link target")
            continue
        target, anchor = resolve(link)
        if target is not None:
            if not target.is_relative_to(root.resolve()):
                problems.append(f"{link.where(root)}: {target} is outside the repository")
                continue
            if not target.exists():
                problems.append(f"{link.where(root)}: {target.relative_to(root.resolve()).as_posix()} does not exist")
                continue
        if anchor is None:
            continue
        page = target if target is not None else None
        if page is None:
            known = set(unique_slugs(headings(own_text)))
        elif page.suffix.lower() == ".md" and page.is_file():
            known = anchors(page)
        else:
            continue  # an anchor into a source file (a line), not a heading
        if anchor not in known:
            name = page.relative_to(root.resolve()).as_posix() if page is not None else path.relative_to(root).as_posix()
            close = sorted(a for a in known if anchor.split("-")[0] in a)[:5]
            problems.append(f"{link.where(root)}: no heading of {name} has the anchor #{anchor}" + (f" (near: {', '.join(close)})" if close else ""))
    return problems


def doc_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def check_docs(root: Path) -> list[str]:
    """Every link problem of README.md and docs/*.md under `root`."""
    return [p for f in doc_files(root) for p in check_file(f, root)]


# -- the repository's documentation ---------------------------------------------------------------------------


def test_every_relative_link_and_anchor_resolves() -> None:
    problems = check_docs(ROOT)
    assert not problems, f"{len(problems)} broken link(s):\n" + "\n".join(problems)


def test_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").split("\n")
    n = len(lines) - (1 if lines[-1] == "" else 0)
    assert n <= README_MAX_LINES, f"README.md: {n} lines; the front page keeps at most {README_MAX_LINES} (move the rest to docs/)"


def test_readme_links_every_docs_page() -> None:
    linked = {resolve(link)[0] for link in links(ROOT / "README.md") if not _EXTERNAL.match(link.target)}
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert pages, "docs/ holds no Markdown page"
    missing = [p.relative_to(ROOT).as_posix() for p in pages if p.resolve() not in linked]
    assert not missing, f"README.md links none of: {', '.join(missing)} (every docs page is reached from the front page)"


def test_the_readme_shows_the_report_screenshot() -> None:
    images = [link for link in links(ROOT / "README.md") if link.image]
    assert any(resolve(link)[0] == (ROOT / "docs" / "report.png").resolve() for link in images), "README.md: no ![...](docs/report.png) image"


# -- the slug rule ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("heading, slug", [
    ("Bring your own model file (.onnx / .tflite)", "bring-your-own-model-file-onnx--tflite"),
    ("Which quantized layer moves the CAM (`edgecam sensitivity`)", "which-quantized-layer-moves-the-cam-edgecam-sensitivity"),
    ("The inventory (`devices.toml`)", "the-inventory-devicestoml"),
    ("An emulated aarch64 board (ARM kernels on this x86 machine)", "an-emulated-aarch64-board-arm-kernels-on-this-x86-machine"),
    ("The explain stage at 224 px (items 9-10), 2026-12-05", "the-explain-stage-at-224-px-items-9-10-2026-12-05"),
    ("Saliency-assisted QAT (arXiv 2411.05858), 2026-12-01", "saliency-assisted-qat-arxiv-241105858-2026-12-01"),
    ("`make test`, `make test-slow` and `make run` on a fresh clone", "make-test-make-test-slow-and-make-run-on-a-fresh-clone"),
    ("The model: a `module:factory`", "the-model-a-modulefactory"),
    ("The quickstart's output, 2026-12-01", "the-quickstarts-output-2026-12-01"),
    ("`[[models]]`", "models"),
    ("`[saliency_qat]`", "saliency_qat"),
    ("ONNX Runtime / LiteRT + TensorRT", "onnx-runtime--litert--tensorrt"),
    ("Phones over adb, verified against a real adbd", "phones-over-adb-verified-against-a-real-adbd"),
    ("How quantization works (and why the int8 really is int8)", "how-quantization-works-and-why-the-int8-really-is-int8"),
    ("Größe ± Ω", "größe--ω"),
    ("**Bold** and [a link](x.md)", "bold-and-a-link"),
])
def test_github_slug(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_repeated_headings_are_numbered_as_github_numbers_them() -> None:
    assert unique_slugs(["Notes", "Notes", "Notes", "Notes-1"]) == ["notes", "notes-1", "notes-2", "notes-1-1"]


def test_headings_in_code_blocks_are_not_headings() -> None:
    text = "# Title\n\n```toml\n# not a heading\n```\n\n   ```\n## indented fence\n   ```\n## Real\n"
    assert headings(text) == ["Title", "Real"]


# -- the checker finds what it must ---------------------------------------------------------------------------


def _tree(tmp_path: Path, readme: str, page: str) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "a.toml").write_text("")
    (tmp_path / "README.md").write_text(readme)
    (tmp_path / "docs" / "page.md").write_text(page)
    return tmp_path


def test_a_sound_tree_has_no_problem(tmp_path: Path) -> None:
    root = _tree(tmp_path, "# Top\n\nSee [the page](docs/page.md#the-part-one) and [top](#top).\n",
                 "# Page\n\n## The part (one)\n\n[config](../configs/a.toml), [back](../README.md#top), [web](https://example.org/x#y)\n")
    assert check_docs(root) == []


def test_broken_links_are_reported_with_file_line_and_link(tmp_path: Path) -> None:
    readme = "\n".join([
        "# Top",
        "",
        "A [missing page](docs/nowhere.md).",
        "An [anchor that is no heading](docs/page.md#the-part-two).",
        "A [local anchor](#bottom), an ![image](docs/missing.png).",
        "`[inline code](is/not/a/link.md)` and",
        "```",
        "[fenced](is/not/a/link.md)",
        "```",
        "Out of the tree: [up](../outside.md).",
    ])
    root = _tree(tmp_path, readme, "# Page\n\n## The part (one)\n\n[bad config](../configs/b.toml)\n")
    problems = check_docs(root)
    assert any(p.startswith("README.md:3: [missing page](docs/nowhere.md): docs/nowhere.md does not exist") for p in problems), problems
    assert any(p.startswith("README.md:4: [anchor that is no heading](docs/page.md#the-part-two): no heading of docs/page.md has the anchor #the-part-two") for p in problems), problems
    assert any(p.startswith("README.md:5: [local anchor](#bottom): no heading of README.md has the anchor #bottom") for p in problems), problems
    assert any(p.startswith("README.md:5: ![image](docs/missing.png): docs/missing.png does not exist") for p in problems), problems
    assert any(p.startswith("README.md:10: [up](../outside.md):") and "outside the repository" in p for p in problems), problems
    assert any(p.startswith("docs/page.md:5: [bad config](../configs/b.toml): configs/b.toml does not exist") for p in problems), problems
    assert not any("is/not/a/link" in p for p in problems), problems
    assert len(problems) == 6, problems


def test_a_broken_link_in_a_copy_of_the_real_docs_is_caught(tmp_path: Path) -> None:
    """The real README and docs, copied; one link of each kind broken in the copy: each is reported, and the
    copy without the breakage reports only what the copy lacks (the files the docs link outside docs/)."""
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    shutil.copy(ROOT / "README.md", root / "README.md")
    for f in (ROOT / "docs").iterdir():
        if f.is_file():
            shutil.copy(f, root / "docs" / f.name)
    baseline = check_docs(root)
    assert all("does not exist" in p and not re.search(r"\]\((docs/)?[\w-]+\.md", p.split(": ", 1)[1]) for p in baseline), baseline

    readme = (root / "README.md").read_text(encoding="utf-8")
    link = next(l for l in links(root / "README.md") if l.target.startswith("docs/") and "#" in l.target)
    broken = readme.replace(f"]({link.target})", f"]({link.target}-broken)", 1)
    problems = check_file(root / "README.md", root, broken)
    assert any(p.startswith(f"README.md:{link.line}: [") and f"has the anchor #{link.target.split('#')[1]}-broken" in p for p in problems), problems

    page = root / "docs" / "tutorial.md"
    moved = page.read_text(encoding="utf-8").replace("](reference.md", "](referense.md", 1)
    problems = check_file(page, root, moved)
    assert any(p.startswith("docs/tutorial.md:") and "docs/referense.md does not exist" in p for p in problems), problems
