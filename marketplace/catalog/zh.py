"""Chinese text for catalog search: jieba segmentation with the city's own vocabulary.

Chinese is written without spaces, so both search back ends (PostgreSQL's ``simple`` parser,
SQLite's ``unicode61`` tokenizer) would index 交通拥堵指数 as one word and a search for 拥堵
would find nothing. Every run of text that holds Chinese is therefore cut into words with
jieba, at index time and at query time, with one shared dictionary:

- at index time with ``cut_for_search`` (the words and the shorter words inside long ones, so
  质量 finds 空气质量 too), stored space-joined in the product's ``search_*_zh`` columns,
  which the full-text indexes read next to title, tags and description (migration 0013);
- at query time with the precise cut, so a query word is one of the indexed words.

The dictionary is jieba's own plus ``CITY_WORDS``: terms of the city's domains that jieba
would otherwise split or join wrongly (井盖, 信号灯, 12345 …).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any

# CJK Unified Ideographs, Extension A and the compatibility block.
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"\w+", re.UNICODE)

# The city's words, with a frequency high enough that jieba keeps each of them whole.
CITY_WORDS: tuple[str, ...] = (
    "拥堵",
    "拥堵指数",
    "信号灯",
    "红绿灯",
    "井盖",
    "窨井盖",
    "12345",
    "热线",
    "空气质量",
    "投诉",
    "工单",
    "违章",
    "车流量",
    "路口",
    "景区",
    "客流",
    "西湖",
    "诊所",
    "床位",
    "信用",
    "城管",
    "巡检",
    "停车位",
    "区县中枢",
    "城市大脑",
)
_CITY_WORD_FREQ = 50_000

_lock = threading.Lock()
_tokenizer: Any = None


def _jieba() -> Any:
    """One jieba tokenizer for the process, built on first use (its dictionary takes ~1 s)."""
    global _tokenizer
    if _tokenizer is None:
        with _lock:
            if _tokenizer is None:
                import jieba

                jieba.setLogLevel(logging.WARNING)
                tok = jieba.Tokenizer()
                for word in CITY_WORDS:
                    tok.add_word(word, freq=_CITY_WORD_FREQ)
                tok.initialize()
                _tokenizer = tok
    return _tokenizer


def has_chinese(text: str) -> bool:
    return _CJK.search(text) is not None


def _words(pieces: Iterable[str]) -> Iterator[str]:
    for piece in pieces:
        yield from _WORD.findall(piece.lower())


def query_words(term: str) -> list[str]:
    """A query term cut into the words the index holds (a term without Chinese as it is)."""
    if not has_chinese(term):
        return [term]
    return list(_words(_jieba().cut(term, HMM=False)))


def index_text(*texts: str | None) -> str | None:
    """The Chinese words of ``texts`` (each run that holds Chinese, cut for search),
    space-joined, each word once; ``None`` when there is no Chinese to index."""
    seen: dict[str, None] = {}
    tok = _jieba()
    for text in texts:
        if not text or not has_chinese(text):
            continue
        for run in _WORD.findall(text):
            if has_chinese(run):
                seen.update(dict.fromkeys(_words(tok.cut_for_search(run, HMM=False))))
    return " ".join(seen) or None
