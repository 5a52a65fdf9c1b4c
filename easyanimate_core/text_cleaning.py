"""Caption cleaning applied to prompts before T5, as EasyAnimate's pipelines do (``clean_caption``).

The rules follow the PixArt-alpha / DeepFloyd-IF caption cleaner (lower-casing, removal of URLs,
HTML, @handles, CJK, ids, file names, shop boiler-plate; punctuation normalisation) and are
re-implemented here with the standard library only: HTML is stripped with ``html.parser`` (the
reference uses BeautifulSoup) and text repair is a small subset of ftfy (control characters,
full-width forms, ligatures, Unicode NFC). Training captions are fed raw; only inference cleans.
"""

from __future__ import annotations

import html
import re
import unicodedata
import urllib.parse as urlparse
from html.parser import HTMLParser

_TLDS = r"(?:com|co|ru|net|org|edu|gov|it)"
# "http:..." / "https:..." or "www:..." links, and bare domains such as "shop.example.com/page"
_URL_HTTP = re.compile(r"\b((?:https?:(?:/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.]" + _TLDS + r"[\w/-]*\b/?(?!@)))")
_URL_WWW = re.compile(r"\b((?:www:(?:/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.]" + _TLDS + r"[\w/-]*\b/?(?!@)))")
_HANDLE = re.compile(r"@[\w\d]+\b")
# CJK strokes, katakana extensions, enclosed letters, compatibility, unified ideographs (+ ext. A),
# Yijing symbols: one contiguous block of code points
_CJK = re.compile(r"[\u31c0-\u9fff]+")
_DASHES = re.compile("[\u002d\u058a\u05be\u1400\u1806\u2010-\u2015\u2e17\u2e1a\u2e3a\u2e3b\u2e40"
                     "\u301c\u3030\u30a0\ufe31\ufe32\ufe58\ufe63\uff0d]+")
_DOUBLE_QUOTES = re.compile("[`\u00b4\u00ab\u00bb\u201c\u201d\u00a8]")
_SINGLE_QUOTES = re.compile("[\u2018\u2019]")
_EXTENSIONS = r"(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)"
_BAD_PUNCT = re.compile(r"[#®•©™&@·º½¾¿¡§~)(\]\[}{|\\/*]+")
_SEPARATORS = re.compile(r"[-_]")

# (pattern, replacement) applied in order after HTML stripping
_EARLY_RULES = [
    (re.compile(r"&quot;?"), ""),
    (re.compile(r"&amp"), ""),
    (re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"), " "),       # IP addresses
    (re.compile(r"\d:\d\d\s+$"), ""),                                # trailing article times
    (re.compile(r"\\n"), " "),                                       # escaped newlines
    (re.compile(r"#\d{1,3}\b"), ""),                                 # "#12"
    (re.compile(r"#\d{5,}\b"), ""),                                  # "#123456"
    (re.compile(r"\b\d{6,}\b"), ""),                                 # long numbers
    (re.compile(r"\S+\." + _EXTENSIONS), ""),                        # file names
    (re.compile(r"[\"']{2,}"), '"'),
    (re.compile(r"\.{2,}"), " "),
    (_BAD_PUNCT, " "),
    (re.compile(r"\s+\.\s+"), " "),
]
_LATE_RULES = [
    (re.compile(r"\b[a-zA-Z]{1,3}\d{3,15}\b"), ""),                  # product codes: ab1234
    (re.compile(r"\b[a-zA-Z]+\d+[a-zA-Z]+\b"), ""),                  # ab12cd
    (re.compile(r"\b\d+[a-zA-Z]+\d+\b"), ""),                        # 12ab34
    (re.compile(r"(worldwide\s+)?(free\s+)?shipping"), ""),
    (re.compile(r"(free\s)?download(\sfree)?"), ""),
    (re.compile(r"\bclick\b\s(?:for|on)\s\w+"), ""),
    (re.compile(r"\b" + _EXTENSIONS + r"(\simage[s]?)?"), ""),
    (re.compile(r"\bpage\s+\d+\b"), ""),
    (re.compile(r"\b\d*[a-zA-Z]+\d+[a-zA-Z]+\d+[a-zA-Z\d]*\b"), " "),  # a1b2c3...
    (re.compile("\\b\\d+\\.?\\d*[x\u0445\u00d7]\\d+\\.?\\d*\\b"), ""),  # sizes: 1920x1080
    (re.compile(r"\b\s+:\s+"), ": "),
    (re.compile(r"(\D[,./])\b"), r"\1 "),                            # space after punctuation
    (re.compile(r"\s+"), " "),
]
_FINAL_RULES = [
    (re.compile(r"^[\"']([\w\W]+)[\"']$"), r"\1"),                   # surrounding quotes
    (re.compile(r"^['_,\-:;]"), ""),
    (re.compile(r"['_,\-:+]$"), ""),
    (re.compile(r"^\.\S+$"), ""),
]

_LIGATURES = {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
              "\ufb05": "st", "\ufb06": "st", "\u0132": "IJ", "\u0133": "ij"}


class _TextOnly(HTMLParser):
    """Collects the text content of an HTML fragment (entities decoded), dropping the tags."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []

    def handle_data(self, data):
        self.parts.append(data)


def strip_html(text: str) -> str:
    parser = _TextOnly()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


def fix_text(text: str) -> str:
    """The part of ftfy's repair that matters for prompts: drop control characters, map
    full-width forms and ligatures to ASCII, normalise to NFC."""
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")
    text = "".join(unicodedata.normalize("NFKC", ch) if "\uff01" <= ch <= "\uff5e" else ch for ch in text)
    text = "".join(_LIGATURES.get(ch, ch) for ch in text)
    return unicodedata.normalize("NFC", text)


def _apply(rules, text: str) -> str:
    for pattern, replacement in rules:
        text = pattern.sub(replacement, text)
    return text


def _clean_once(caption: str) -> str:
    caption = urlparse.unquote_plus(str(caption)).strip().lower()
    caption = caption.replace("<person>", "person")
    caption = _URL_WWW.sub("", _URL_HTTP.sub("", caption))
    caption = strip_html(caption)
    caption = _HANDLE.sub("", caption)
    caption = _CJK.sub("", caption)
    caption = _DASHES.sub("-", caption)
    caption = _SINGLE_QUOTES.sub("'", _DOUBLE_QUOTES.sub('"', caption))
    caption = _apply(_EARLY_RULES, caption)
    if len(_SEPARATORS.findall(caption)) > 3:  # this-is-a-slug / snake_case_name -> words
        caption = _SEPARATORS.sub(" ", caption)
    caption = html.unescape(html.unescape(fix_text(caption)))
    caption = _apply(_LATE_RULES, caption)
    caption = _apply(_FINAL_RULES, caption)
    return caption.strip()


def clean_caption(text: str) -> str:
    """Clean a prompt like the reference pipeline; two passes, because removing one pattern can
    expose another (the reference also runs its cleaner twice)."""
    return _clean_once(_clean_once(text))
