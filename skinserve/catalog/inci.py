"""INCI label text -> ordered ingredient entries: variations, may-contain lists, percentages, footnotes, synonyms.

Written by hand: no kept library parses cosmetic labels (the INCI parsers on PyPI split on every comma, which
breaks `1,2-Hexanediol` and `Butyrospermum Parkii (Shea) Butter`, and keep marketing lines as ingredients).
What a label holds, and how each piece is read:
- commas and semicolons separate entries, except inside parentheses or brackets and between digits (1,2-...);
  `(and)` joins the parts of a trade blend, which are listed as separate entries;
- `Aqua/Water/Eau` and `Water (Aqua)`: one entry whose alternatives are tried in turn when matching;
- `Salicylic Acid 2%`, `(10%)`: the percentage is kept and removed from the name;
- `May contain`, `[+/- ...]`, `(+/-)`: the entries that follow are flagged `may_contain`;
- `Aloe Barbadensis Leaf Juice*` keeps its footnote marker; `*Organic` alone is a footnote, not an ingredient;
- `Product variation 1:` or `Mini Size: Water, ...`: a heading that starts a new variation;
- `Ingredients:`, `Active Ingredients:`, `Inactive Ingredients:`: labels, removed;
- `-Niacinamide: Minimizes the look of pores.` and other sentences: marketing, reported and dropped.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

MAX_NAME_CHARS = 200  # longer fragments are prose, not names (the longest COSING INCI names are ~150 chars)
MAX_HEADING_WORDS = 10
FOOTNOTE_MARKS = "*†‡^°¹²³"

_LIST_PREFIX = re.compile(
    r"^\s*(?:full\s+|complete\s+)?(?:ingredients?|ingr[ée]dients|inci|composition)(?:\s+list)?\s*[:\-–]\s*", re.I
)
_SECTION = re.compile(r"^\s*(active|inactive|other|non-?medicinal)(?:\s+ingredients?\s*[:\-–]?|\s*[:\-–])\s*", re.I)
_MAY_CONTAIN = re.compile(
    r"(?:\bmay\s+contain\b|\bpeut\s+contenir\b|\[\s*\+\s*/\s*-\s*\]?|\(\s*\+\s*/\s*-\s*\)|(?<![\w/])\+\s*/\s*-)"
    r"\s*(?:\(\s*\+\s*/\s*-\s*\))?\s*[:\-–]?\s*",
    re.I,
)
_PERCENT = re.compile(r"\(?\s*(?:<\s*)?(\d{1,3}(?:[.,]\d+)?)\s*%\s*\)?")
_PROSE_WORDS = re.compile(
    r"\b(?:the|is|are|this|that|these|your|you|our|we|please|helps?|formulated|free\s+from|free\s+of|without|"
    r"visibly|reduces?|minimi[sz]es?|improves?|provides?|may\s+change|refer|made\s+with|look\s+of)\b",
    re.I,
)
_FOOTNOTE_WORDS = re.compile(
    r"organic|natural|origin|certified|derived|farming|fair\s*trade|wild|ecocert|cosmos|essential\s+oil|"
    r"naturally|plant",
    re.I,
)
_FOOTNOTE_AFTER_PERIOD = re.compile(r"\.\s+(?=[*†‡])")
_OPEN, _CLOSE = "([{", ")]}"
_PLAIN_SEPARATOR = re.compile(r";|(?<!\d),|,(?!\d)")


@dataclass(frozen=True)
class ParsedIngredient:
    """One entry of a list: its label text, its normalised name and the other names it may be listed under."""

    position: int  # 1-based within its variation
    label_text: str
    name: str  # the label text without percentage and footnote marks
    normalized: str
    alternatives: tuple[str, ...]  # normalised: without parentheses, the parenthesised part, the slash parts
    percent: float | None = None
    may_contain: bool = False
    footnote: str | None = None
    section: str | None = None  # active | inactive | other, for drug-facts labels

    @property
    def candidates(self) -> tuple[str, ...]:
        return (self.normalized, *self.alternatives)


@dataclass
class ParsedVariation:
    name: str  # '' for the only (or the first, unnamed) list
    ingredients: list[ParsedIngredient] = field(default_factory=list)


@dataclass(frozen=True)
class IgnoredText:
    text: str
    reason: str


@dataclass
class ParsedList:
    variations: list[ParsedVariation] = field(default_factory=list)
    ignored: list[IgnoredText] = field(default_factory=list)

    def ingredients(self) -> list[tuple[str, ParsedIngredient]]:
        return [(v.name, item) for v in self.variations for item in v.ingredients]


_DASHES = re.compile(r"[\u2010-\u2015\u2212]")
_AROUND_JOINERS = re.compile(r"\s*([/-])\s*")
_AFTER_OPEN = re.compile(r"([(\[])\s+")
_BEFORE_CLOSE = re.compile(r"\s+([)\]])")
_SPACES = re.compile(r"\s+")
_CACHE = 1 << 16  # distinct names: a catalog repeats the same few thousand names; measured 4x faster ingest


@lru_cache(maxsize=_CACHE)
def normalize_inci(name: str) -> str:
    """The match key of a name: accents folded, lower case, one spacing for dashes, slashes and parentheses."""
    text = unicodedata.normalize("NFKD", name)
    if not text.isascii():
        text = "".join(c for c in text if not unicodedata.combining(c))
    text = _DASHES.sub("-", text.lower()).replace("\u2019", "'").replace("`", "'")
    text = _AROUND_JOINERS.sub(r"\1", text)
    text = _AFTER_OPEN.sub(r"\1", text)
    text = _BEFORE_CLOSE.sub(r"\1", text)
    text = _SPACES.sub(" ", text)
    return text.strip(" .;:,*†‡\t\r\n")


def parse_ingredients(text: str | Iterable[str]) -> ParsedList:
    """Parse a label: a text (lines are split on newlines) or the list of lines a retailer's file publishes."""
    lines = text.splitlines() if isinstance(text, str) else [str(line) for line in text]
    parser = _Parser()
    for line in lines:
        parser.line(line)
    return parser.result()


class _Parser:
    def __init__(self) -> None:
        self.parsed = ParsedList(variations=[ParsedVariation("")])
        self.may_contain = False  # a "May contain:" line applies to the lines below it, until the next heading
        self.section: str | None = None

    @property
    def current(self) -> ParsedVariation:
        return self.parsed.variations[-1]

    def result(self) -> ParsedList:
        variations = [v for v in self.parsed.variations if v.ingredients]
        self.parsed.variations = variations
        return self.parsed

    def ignore(self, text: str, reason: str) -> None:
        self.parsed.ignored.append(IgnoredText(text.strip()[:300], reason))

    def line(self, raw: str) -> None:
        line = raw.strip().strip("\u200b\ufeff")
        if not line:
            return
        if line[0] in "-•·–" and len(line) > 1 and not line[1].isdigit():
            self.ignore(line, "marketing line (a bullet point)")
            return
        if _is_footnote_definition(line):
            self.ignore(line, "footnote")
            return
        line = _LIST_PREFIX.sub("", line)
        section = _SECTION.match(line)
        if section:
            self.section = section.group(1).lower().replace("-", "")
            line = line[section.end() :]
            if not line.strip():
                return
        if self._heading(line):
            return
        self.items(line)

    def _heading(self, line: str) -> bool:
        """`Product variation 1:` starts a variation; `Mini Size: Water, ...` starts one and lists it."""
        head, sep, rest = line.partition(":")
        if not sep or _split_top_level(head, separators=",;") != [head] or len(head.split()) > MAX_HEADING_WORDS:
            return False
        if _MAY_CONTAIN.fullmatch(head + sep) or _MAY_CONTAIN.match(head):
            return False
        rest = rest.strip()
        if not rest:
            self.new_variation(head)
            return True
        tokens = _split_top_level(rest)
        if len(tokens) == 1 and _is_prose(rest):
            self.ignore(line, "marketing line (a key ingredient and its claim)")
            return True
        if len(tokens) < 2 and len(rest.split()) <= 3 and head.strip()[:1].isupper() and _looks_like_name(head):
            # "Niacinamide: 10%" style notes are not headings; keep the line as a list.
            return False
        self.new_variation(head)
        self.items(rest)
        return True

    def new_variation(self, heading: str) -> None:
        name = normalize_space(heading)[:190]
        taken = {v.name for v in self.parsed.variations if v.ingredients}
        if name in taken:  # two "Mini Size:" lists stay two variations
            name = next(f"{name} ({n})" for n in range(2, 10_000) if f"{name} ({n})" not in taken)
        self.may_contain = False
        self.section = None
        if not self.current.ingredients:
            self.current.name = name
        else:
            self.parsed.variations.append(ParsedVariation(name))

    def items(self, line: str) -> None:
        tokens = _split_top_level(line)
        if _is_prose(tokens[0]):  # an ingredient list never opens with a sentence
            self.ignore(line, "marketing line (a sentence, not an ingredient list)")
            return
        # "..., Phenoxyethanol. *Organic": the footnote after the closing period is its own piece.
        for piece in _FOOTNOTE_AFTER_PERIOD.split(line):
            for text, may, open_ended in _may_contain_segments(piece):
                for token in _split_top_level(text):
                    self.token(token, may or self.may_contain)
                if open_ended:
                    self.may_contain = True

    def token(self, token: str, may_contain: bool) -> None:
        token = token.strip()
        if not token:
            return
        for part in re.split(r"\s*\(and\)\s*|\s+&\s+(?=[A-Z])", token, flags=re.I):
            self._entry(part.strip(), may_contain)

    def _entry(self, text: str, may_contain: bool) -> None:
        label = text.strip().rstrip(".").strip()
        if not label:
            return
        read = _read_entry(label)
        if isinstance(read, str):
            if read:
                self.ignore(label, read)
            return
        name, normalized, alternatives, percent, footnote = read
        item = ParsedIngredient(
            position=len(self.current.ingredients) + 1,
            label_text=label[:500],
            name=name,
            normalized=normalized,
            alternatives=alternatives,
            percent=percent,
            may_contain=may_contain,
            footnote=footnote,
            section=self.section,
        )
        self.current.ingredients.append(item)


@lru_cache(maxsize=_CACHE)
def _read_entry(label: str) -> tuple[str, str, tuple[str, ...], float | None, str | None] | str:
    """(name, normalised, alternatives, percent, footnote) of one entry, or why it is not one ('' to drop quietly)."""
    if _is_footnote_definition(label):
        return "footnote"
    if len(label) > MAX_NAME_CHARS:
        return f"over {MAX_NAME_CHARS} characters: not an ingredient name"
    if _is_prose(label):
        return "a sentence, not an ingredient name"
    name, percent = _take_percent(label)
    name, footnote = _take_footnote(name)
    normalized = normalize_inci(name)
    if not normalized or not re.search(r"[a-z]", normalized):
        return "no letters: not an ingredient name" if normalized else ""
    return normalize_space(name), normalized[:300], _alternatives(name, normalized), percent, footnote


def normalize_space(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _split_top_level(text: str, separators: str = ",;") -> list[str]:
    """Split on separators outside brackets; a comma between two digits (1,2-Hexanediol) is part of a name."""
    if separators == ",;" and not any(b in text for b in _OPEN):  # most lines: one regex instead of a char loop
        parts = [p.strip() for p in _PLAIN_SEPARATOR.split(text)]
        return [p for p in parts if p] or [text.strip()]
    parts: list[str] = []
    depth = 0
    start = 0
    for i, char in enumerate(text):
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth = max(0, depth - 1)
        elif char in separators and depth == 0:
            if char == "," and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit():
                continue
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    stripped = [p.strip() for p in parts]
    return [p for p in stripped if p] or [text.strip()]


def _may_contain_segments(line: str) -> list[tuple[str, bool, bool]]:
    """[(text, may_contain, open_ended)]: a marker flags the rest of the list; `[+/- a, b]` flags only a and b."""
    segments: list[tuple[str, bool, bool]] = []
    rest = line
    while True:
        match = _MAY_CONTAIN.search(rest)
        if match is None:
            segments.append((rest, False, False))
            return segments
        segments.append((rest[: match.start()], False, False))
        after = rest[match.end() :]
        if match.group(0).lstrip().startswith("["):
            inside, _, after = after.partition("]")
            segments.append((inside, True, False))
            rest = after
            continue
        segments.append((after.strip().strip("()[]"), True, True))
        return segments


def _take_percent(text: str) -> tuple[str, float | None]:
    match = _PERCENT.search(text)
    if match is None:
        return text, None
    value = float(match.group(1).replace(",", "."))
    name = (text[: match.start()] + " " + text[match.end() :]).strip()
    return name, value if 0 <= value <= 100 else None


def _take_footnote(text: str) -> tuple[str, str | None]:
    stripped = text.strip()
    marks = ""
    while stripped and stripped[-1] in FOOTNOTE_MARKS:
        marks = stripped[-1] + marks
        stripped = stripped[:-1].rstrip()
    while stripped and stripped[0] in FOOTNOTE_MARKS:
        marks = stripped[0] + marks
        stripped = stripped[1:].lstrip()
    return stripped, marks or None


def _is_footnote_definition(text: str) -> bool:
    """`*Organic`, `**Natural origin`, `*Certified organic ingredients`: a footnote's text, not an entry."""
    stripped = text.strip()
    if not stripped or stripped[0] not in FOOTNOTE_MARKS:
        return False
    body = stripped.lstrip(FOOTNOTE_MARKS + " ")
    return bool(body) and _FOOTNOTE_WORDS.search(body) is not None and "," not in body


def _is_prose(text: str) -> bool:
    words = text.split()
    if len(words) > 12:
        return True
    return len(words) >= 4 and (text.rstrip().endswith(("!", "?")) or len(_PROSE_WORDS.findall(text)) >= 1)


def _looks_like_name(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9 ,.'/()\-]+", text.strip()))


def _alternatives(name: str, normalized: str) -> tuple[str, ...]:
    """Other names to try: without the parenthesised parts, the parts themselves, and each side of a slash."""
    found: list[str] = []
    without = re.sub(r"\s*[\(\[][^)\]]*[\)\]]\s*", " ", name)
    found.append(normalize_inci(without))
    outer = re.fullmatch(r"\s*(.+?)\s*[\(\[]([^)\]]+)[\)\]]\s*", name)
    if outer:  # "Aqua (Water)", "Titanium Dioxide (CI 77891)": the part in brackets closes the name
        found.extend(normalize_inci(part) for part in outer.group(2).split("/"))
    for piece in (without, name):
        if "/" in piece:
            found.extend(normalize_inci(part) for part in _split_top_level(piece, separators="/"))
    unique: list[str] = []
    for alt in found:
        if alt and alt != normalized and alt not in unique and re.search(r"[a-z]", alt):
            unique.append(alt[:300])
    return tuple(unique)
