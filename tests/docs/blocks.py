"""Fenced code blocks of the README and the docs, and how each is run (or why not).

The rules, also written for authors in ``docs/development.md``:

- A block fenced as ``python`` or ``bash`` (also ``sh``, ``shell``, ``py``) runs. Any other
  fence (``text``, ``yaml``, ``json``, ``mermaid``, ...) only shows something and never runs.
- ``<!-- not-run: REASON -->`` on the line before a block keeps it from running; the reason
  is required (a block that needs a second machine or a long-lived server, say).
- A ``python`` block with ``title="PATH"`` is a file the reader saves: it is written to
  ``PATH`` in the page's working folder, not run.
- The runnable blocks of a page run in order, in one working folder (the checkout's
  top-level entries linked into a temporary folder) with its own state folder
  (``MLSYS_STATE_DIR``) and Prefect home, as a reader following the page would.
- ``<!-- docs-test: after PAGE -->`` runs the page right after PAGE (a path relative to
  ``docs/``), in that page's folder and state: a how-to that starts from a trained model
  continues where the page that trained one stopped.
- ``<!-- docs-test: slow -->`` marks the page (and the chain it is part of) slow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
RUN_LANGUAGES = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_NOT_RUN = re.compile(r"^\s*<!--\s*not-run:(?P<reason>.*?)-->\s*$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:(?P<what>.*?)-->\s*$")
_TITLE = re.compile(r'title="(?P<title>[^"]+)"')


class DocsMarkupError(ValueError):
    """A marker the collector does not understand, or an opt-out without a reason."""


@dataclass(frozen=True)
class Block:
    page: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    language: str  # the fence's first word, lower case ("" when none)
    code: str
    title: str | None = None
    not_run: str | None = None  # the reason, when opted out

    @property
    def runner(self) -> str | None:
        """``python``, ``bash`` or ``None`` (shown only, or opted out, or a file)."""
        if self.not_run is not None or self.title is not None:
            return None
        return RUN_LANGUAGES.get(self.language)


@dataclass
class Page:
    path: str
    blocks: list[Block] = field(default_factory=list)
    after: str | None = None
    slow: bool = False


def parse_page(text: str, path: str) -> Page:  # noqa: PLR0912 -- one pass, one branch per rule
    """Every fenced block of one Markdown page, with the page's docs-test directives."""
    page = Page(path=path)
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = _DIRECTIVE.match(line)
        if directive:
            what = directive["what"].strip()
            if what == "slow":
                page.slow = True
            elif what.startswith("after "):
                page.after = what.removeprefix("after ").strip()
            else:
                raise DocsMarkupError(f"{path}:{i + 1}: unknown docs-test directive {what!r}")
        opening = _FENCE.match(line)
        if not opening:
            i += 1
            continue
        fence, indent, info = opening["fence"], len(opening["indent"]), opening["info"].strip()
        body, j = [], i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if closing and closing["fence"].startswith(fence) and not closing["info"].strip():
                break
            body.append(lines[j][indent:] if lines[j].startswith(" " * indent) else lines[j])
            j += 1
        else:
            raise DocsMarkupError(f"{path}:{i + 1}: code block never closed")
        language = info.split()[0].lower() if info else ""
        title = _TITLE.search(info)
        not_run = None
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = _NOT_RUN.match(lines[k]) if k >= 0 else None
        if marker:
            not_run = marker["reason"].strip()
            if not not_run:
                raise DocsMarkupError(f"{path}:{k + 1}: `not-run:` needs a reason")
        elif k >= 0 and "not-run" in lines[k]:
            raise DocsMarkupError(f"{path}:{k + 1}: write `<!-- not-run: REASON -->`")
        page.blocks.append(
            Block(
                page=path,
                line=i + 1,
                language=language,
                code="\n".join(body) + "\n",
                title=title["title"] if title else None,
                not_run=not_run,
            )
        )
        i = j + 1
    return page


def markdown_files() -> list[Path]:
    """The README and every page under docs/."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def collect() -> dict[str, Page]:
    """Every page by its path relative to the repository root."""
    pages = {}
    for file in markdown_files():
        rel = file.relative_to(ROOT).as_posix()
        pages[rel] = parse_page(file.read_text(encoding="utf-8"), rel)
    return pages


def chains(pages: dict[str, Page]) -> list[list[Page]]:
    """Pages grouped into runs: a root page, then the pages that continue after it."""
    by_after: dict[str, list[Page]] = {}
    for page in pages.values():
        if page.after is not None:
            target = f"docs/{page.after}"
            if target not in pages:
                raise DocsMarkupError(f"{page.path}: `after {page.after}`: no such page")
            by_after.setdefault(target, []).append(page)

    def chain_from(page: Page) -> list[Page]:
        out = [page]
        for nxt in sorted(by_after.get(page.path, []), key=lambda p: p.path):
            out.extend(chain_from(nxt))
        return out

    roots = [p for p in pages.values() if p.after is None]
    return [chain_from(root) for root in roots]
