"""Model cards and release notes as HTML: CommonMark (markdown-it-py) with raw HTML turned off,
so a publisher's card can format text but never put markup or script into the page."""

from __future__ import annotations

from functools import cache

from markdown_it import MarkdownIt
from markupsafe import Markup


@cache
def _parser() -> MarkdownIt:
    # "commonmark" with html off: tags in the text come out escaped; markdown-it also refuses
    # javascript:, vbscript: and data: links (other than images').
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def render_markdown(text: str) -> Markup:
    """The HTML of ``text``, safe to put in a page as is."""
    return Markup(_parser().render(text))
