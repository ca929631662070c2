"""The message catalogs: complete in both languages, real Chinese, and the language choice."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from marketplace.constants import ALL_SCOPES, Domain, ProductKind, ProductState, Tier
from marketplace.portal import TEMPLATES_DIR
from marketplace.portal.i18n import LANGUAGES, Translator, catalog, choose_language

ROOT = Path(__file__).resolve().parents[3]
SOURCES = [
    *TEMPLATES_DIR.glob("*.html"),
    *(ROOT / "marketplace" / "api" / "routes").glob("portal*.py"),
    *(ROOT / "marketplace" / "portal").glob("*.py"),
]
# t("key") / t.plural("key", …) / visit.t("key"): literal keys in templates and code.
LITERAL = re.compile(r"""\bt(?:\.plural)?\(\s*["']([a-z_][a-z0-9_.]*)["']""")
CJK = re.compile(r"[\u4e00-\u9fff]")

# Keys made at run time from stored values (t.choice / "prefix." ~ value).
DYNAMIC = {
    "tier": [t.value for t in Tier],
    "tier_help": [t.value for t in Tier],
    "kind": [k.value for k in ProductKind],
    "domain": [d.value for d in Domain],
    "state": [s.value for s in ProductState],
    "facet": ["kind", "domain", "tier"],
    "request": ["pending", "approved", "rejected", "cancelled"],
    "grant": ["active", "expired", "revoked"],
    "key": ["active", "expired", "revoked"],
    "scope": list(ALL_SCOPES),
    "unit": ["call", "audio-second", "row", "mb", "byte"],
    "per_unit": ["call", "audio-second", "row", "mb", "byte"],
    "doc.kind": ["invoice", "statement"],
    "doc.status": ["draft", "issued", "paid", "void"],
    "doc.footer": ["invoice", "statement"],
    "access": ["approved", "rejected", "decided_by_owner", "decided_by_operator"],
    "keys.lifetime": ["never", "30d", "90d", "365d"],
    "error.code": ["NotFound", "Forbidden", "Unauthenticated", "Conflict", "ValidationError"],
}


def _used_keys() -> set[str]:
    keys: set[str] = set()
    for path in SOURCES:
        found = LITERAL.findall(path.read_text(encoding="utf-8"))
        keys.update(k for k in found if not k.endswith((".", "_")))  # prefixes: DYNAMIC
    for prefix, values in DYNAMIC.items():
        keys.update(f"{prefix}.{v}" for v in values)
    return keys


def test_both_catalogs_hold_the_same_keys() -> None:
    en, zh = catalog("en"), catalog("zh")
    assert set(en) == set(zh), set(en) ^ set(zh)


def test_every_label_the_portal_uses_is_in_both_catalogs() -> None:
    used = _used_keys()
    assert len(used) > 150  # the scan finds the templates' labels
    for lang in LANGUAGES:
        missing = sorted(k for k in used if k not in catalog(lang))
        assert not missing, f"{lang}: {missing}"


def test_chinese_labels_are_chinese() -> None:
    en, zh = catalog("en"), catalog("zh")
    for key, text in zh.items():
        letters = re.sub(r"\{[a-z_]+\}|[A-Z]{2,}|[^A-Za-z]", "", en[key])
        if letters:  # a label with words in it has Chinese words in zh
            assert CJK.search(text), f"{key}: {text!r} is not Chinese"
        # Placeholders are kept, so the same values fill both languages.
        assert set(re.findall(r"\{\w+\}", text)) == set(re.findall(r"\{\w+\}", en[key])), key


@pytest.mark.parametrize(
    ("cookie", "header", "expected"),
    [
        (None, None, "en"),
        (None, "zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        (None, "en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        (None, "fr-FR, zh;q=0.5", "zh"),
        (None, "zh-TW,zh-Hant;q=0.9,en;q=0.5", "en"),  # traditional script is not zh-Hans
        (None, "zh-Hans-CN", "zh"),
        (None, "en;q=0, zh;q=0.1", "zh"),
        ("en", "zh-CN", "en"),  # the switch wins over the browser
        ("zh", "en-US", "zh"),
        ("xx", "zh-CN", "zh"),  # an unknown cookie value is ignored
    ],
)
def test_language_choice(cookie: str | None, header: str | None, expected: str) -> None:
    assert choose_language(cookie, header) == expected


def test_translator_fills_counts_and_fails_loudly_on_unknown_keys() -> None:
    en, zh = Translator("en"), Translator("zh")
    assert en.plural("catalog.results", 1) == "1 product"
    assert en.plural("catalog.results", 7) == "7 products"
    assert zh.plural("catalog.results", 7) == "共 7 个产品"
    assert zh.choice("tier", "restricted") == "限制公开"
    assert zh.choice("tier", "a-new-tier") == "a-new-tier"
    with pytest.raises(KeyError):
        en("no.such.label")
