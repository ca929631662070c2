"""Every label the portal shows, in English and Simplified Chinese, from one catalog per
language (``messages/<lang>.json``), and which language a visitor gets.

The language is the visitor's choice (the ``cb_lang`` cookie the switch sets), else the best
match of ``Accept-Language``, else English. Catalog entries are ``str.format`` templates; a key
missing from a catalog is a bug (the unit tests check both catalogs hold every key the
templates use), so :meth:`Translator.__call__` fails loudly rather than show a raw key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from marketplace.portal import MESSAGES_DIR

LANGUAGES: tuple[str, ...] = ("en", "zh")
DEFAULT_LANGUAGE = "en"
LANG_COOKIE = "cb_lang"
# The value of <html lang>: Simplified Chinese is zh-Hans (so screen readers and fonts pick it).
HTML_LANG = {"en": "en", "zh": "zh-Hans"}


@cache
def catalog(lang: str) -> dict[str, str]:
    """The message catalog of ``lang`` (one of :data:`LANGUAGES`)."""
    if lang not in LANGUAGES:
        raise ValueError(f"no message catalog for {lang!r}")
    with (MESSAGES_DIR / f"{lang}.json").open(encoding="utf-8") as f:
        data: dict[str, str] = json.load(f)
    return data


def _accept_language(header: str) -> list[tuple[float, str]]:
    ranked: list[tuple[float, str]] = []
    for i, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip().lower()
        if not tag:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        # Stable: among equal weights the earlier tag wins.
        ranked.append((q - i * 1e-6, tag))
    return sorted(ranked, reverse=True)


def choose_language(cookie: str | None, accept_language: str | None) -> str:
    """The visitor's language: the switch's cookie, else ``Accept-Language``, else English.

    Chinese tags for traditional script (zh-TW, zh-HK, zh-Hant) are not Simplified Chinese:
    they fall through to the next preference.
    """
    if cookie in LANGUAGES:
        return cookie
    for q, tag in _accept_language(accept_language or ""):
        if q <= 0:
            continue
        primary = tag.split("-", 1)[0]
        if primary == "zh":
            if any(t in tag for t in ("hant", "-tw", "-hk", "-mo")):
                continue
            return "zh"
        if primary in LANGUAGES:
            return primary
    return DEFAULT_LANGUAGE


@dataclass(frozen=True, slots=True)
class Translator:
    """``t("nav.catalog")`` → the label in this language; keyword arguments fill it in."""

    lang: str

    def __call__(self, key: str, **values: Any) -> str:
        text = catalog(self.lang)[key]  # KeyError: a label missing from the catalog
        return text.format(**values) if values else text

    def plural(self, key: str, n: int, **values: Any) -> str:
        """A label that counts: ``key.one`` for one (English needs it; Chinese repeats the
        other form), else ``key``; ``{n}`` is the count."""
        return self(f"{key}.one" if n == 1 else key, n=n, **values)

    def choice(self, prefix: str, value: str | None) -> str:
        """The label of a stored value (a tier, a state...): ``prefix.value``, or the value
        itself when the catalog has none (new values still show, untranslated)."""
        if value is None:
            return ""
        return catalog(self.lang).get(f"{prefix}.{value}", value)

    @property
    def html_lang(self) -> str:
        return HTML_LANG[self.lang]
