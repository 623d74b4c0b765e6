"""The published files by their real column names: which format a header is, and one row of each as a record.

- skincare-clean: Kaggle eward96 `skincare_products_clean.csv` (`product_name, product_url, product_type,
  clean_ingreds, price`; ingredients a stringified Python list, prices in pounds such as `£5.20`).
- sephora-products: Kaggle nadyinky `product_info.csv` (`product_id, product_name, brand_id, brand_name, ...,
  ingredients, price_usd, ..., highlights, primary_category, secondary_category, tertiary_category, ...`).
- sephora-reviews: the same set's `reviews_*.csv` (an unnamed index column, then `author_id, rating,
  is_recommended, helpfulness, ..., submission_time, review_text, review_title, skin_tone, eye_color, skin_type,
  hair_color, product_id, product_name, brand_name, price_usd`).
- cosing: the EU COSING ingredient inventory export (`COSING Ref No, INCI name, INN name, Ph. Eur. Name, CAS No,
  EC No, Chem/IUPAC Name / Description, Restriction, Function, Update Date`, title lines above the header).
- cosing-annex: COSING's annex exports (`Reference Number, Chemical name / INN, Name of Common Ingredients
  Glossary, ..., Maximum concentration in ready for use preparation, ..., Identified INGREDIENTS or substances e.g.`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from skinserve.catalog.inci import normalize_inci, normalize_space

CatalogFormat = Literal["skincare-clean", "sephora-products", "sephora-reviews", "cosing", "cosing-annex"]
FORMATS: tuple[str, ...] = ("skincare-clean", "sephora-products", "sephora-reviews", "cosing", "cosing-annex")
ANNEXES: tuple[str, ...] = ("II", "III", "IV", "V", "VI")
# The strictest first: an ingredient in Annex II and III counts as prohibited.
ANNEX_RANK = {annex: rank for rank, annex in enumerate(ANNEXES)}
MAX_PRICE = Decimal("100000")

COLUMNS: dict[str, tuple[str, ...]] = {
    "skincare-clean": ("product_name", "product_url", "product_type", "clean_ingreds", "price"),
    "sephora-products": (
        "product_id",
        "product_name",
        "brand_id",
        "brand_name",
        "loves_count",
        "rating",
        "reviews",
        "size",
        "variation_type",
        "variation_value",
        "variation_desc",
        "ingredients",
        "price_usd",
        "value_price_usd",
        "sale_price_usd",
        "limited_edition",
        "new",
        "online_only",
        "out_of_stock",
        "sephora_exclusive",
        "highlights",
        "primary_category",
        "secondary_category",
        "tertiary_category",
        "child_count",
        "child_max_price",
        "child_min_price",
    ),  # fmt: skip
    "sephora-reviews": (
        "",
        "author_id",
        "rating",
        "is_recommended",
        "helpfulness",
        "total_feedback_count",
        "total_neg_feedback_count",
        "total_pos_feedback_count",
        "submission_time",
        "review_text",
        "review_title",
        "skin_tone",
        "eye_color",
        "skin_type",
        "hair_color",
        "product_id",
        "product_name",
        "brand_name",
        "price_usd",
    ),  # fmt: skip
    "cosing": (
        "cosing ref no",
        "inci name",
        "inn name",
        "ph. eur. name",
        "cas no",
        "ec no",
        "chem/iupac name / description",
        "restriction",
        "function",
        "update date",
    ),  # fmt: skip
    "cosing-annex": (
        "reference number",
        "chemical name / inn",
        "name of common ingredients glossary",
        "cas number",
        "ec number",
        "product type, body parts",
        "maximum concentration in ready for use preparation",
        "other",
        "wording of conditions of use and warnings",
        "regulation",
        "regulated by",
        "other directives/regulations",
        "sccs opinions",
        "chemical/iupac name",
        "identified ingredients or substances e.g.",
        "cmr",
        "update date",
    ),  # fmt: skip
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "skincare-clean": ("product_name", "product_url", "product_type", "clean_ingreds", "price"),
    "sephora-products": ("product_id", "product_name", "brand_name", "ingredients", "price_usd"),
    "sephora-reviews": ("author_id", "rating", "product_id", "submission_time"),
    "cosing": ("cosing ref no", "inci name"),
    "cosing-annex": ("reference number", "chemical name / inn"),
}
# Other spellings the publishers have used for the same column.
ALIASES = {
    "einecs/elincs no": "ec no",
    "unnamed: 0": "",
    "chemical name": "chemical name / inn",
    "colour index number / name of common ingredients glossary": "name of common ingredients glossary",
}
SOURCES = {"skincare-clean": "skincare-clean", "sephora-products": "sephora", "sephora-reviews": "sephora"}


class RowError(ValueError):
    """One row that cannot be used; the message says which column and why."""


def column_key(cell: str) -> str:
    key = re.sub(r"\s+", " ", cell.strip().lstrip("\ufeff")).lower()
    return ALIASES.get(key, key)


def detect_format(cells: Sequence[str]) -> str | None:
    """The format whose required columns the header holds (case and spacing ignored), or None."""
    keys = {column_key(c) for c in cells}
    if "author_id" in keys:  # the reviews files also carry product_id, product_name and price_usd
        return "sephora-reviews" if set(REQUIRED["sephora-reviews"]) <= keys else None
    for fmt in FORMATS:
        if set(REQUIRED[fmt]) <= keys:
            return fmt
    return None


def unknown_columns(fmt: str, cells: Sequence[str]) -> list[str]:
    known = set(COLUMNS[fmt])
    return [c for c in cells if column_key(c) not in known]


def keyed_row(keys: Sequence[str], cells: Sequence[str]) -> dict[str, str]:
    """A row by column key (`column_key` of each header cell, computed once per file)."""
    return {key: cell.strip() for key, cell in zip(keys, cells, strict=True)}


# ---------------------------------------------------------------- products


@dataclass
class ProductRecord:
    source: str
    external_id: str
    name: str
    brand: str | None
    product_type: str | None
    categories: str | None
    size: str | None
    price: Decimal | None
    currency: str | None
    url: str | None
    rating: float | None
    review_count: int | None
    ingredients_raw: str | None
    ingredient_lines: list[str]  # what the ingredient parser reads
    highlights: list[str] | None
    skin_types: str | None
    attributes: dict[str, Any] = field(default_factory=dict)

    def content_sha256(self) -> str:
        payload = asdict(self)
        payload["price"] = str(self.price) if self.price is not None else None
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def skincare_clean_product(row: Mapping[str, str]) -> ProductRecord:
    name = _required(row, "product_name")
    price, currency = parse_price(row.get("price", ""), default_currency="GBP", column="price")
    ingredients = parse_list_literal(row.get("clean_ingreds", ""), "clean_ingreds")
    product_type = row.get("product_type") or None
    return ProductRecord(
        source=SOURCES["skincare-clean"],
        # The file has no id column; its product names are unique and carry the size ("... 30ml"), while a page
        # URL can be shared by two sizes.
        external_id=normalize_space(name)[:500],
        name=_clip(name, 500, "product_name"),
        brand=None,
        product_type=_clip(product_type, 200, "product_type"),
        categories=_clip(product_type, 500, "product_type"),
        size=None,
        price=price,
        currency=currency,
        url=_clip(row.get("product_url") or None, 1000, "product_url"),
        rating=None,
        review_count=None,
        ingredients_raw=", ".join(ingredients) or None,
        ingredient_lines=ingredients,
        highlights=None,
        skin_types=None,
    )


def sephora_product(row: Mapping[str, str]) -> ProductRecord:
    product_id = _required(row, "product_id")
    if not re.fullmatch(r"[A-Za-z0-9_\-]{1,100}", product_id):
        raise RowError(f"product_id {product_id[:40]!r} is not an id (letters, digits, - and _)")
    price, currency = parse_price(row.get("price_usd", ""), default_currency="USD", column="price_usd")
    lines = parse_list_literal(row.get("ingredients", ""), "ingredients")
    highlights = parse_list_literal(row.get("highlights", ""), "highlights")
    levels = [row.get(k) or "" for k in ("primary_category", "secondary_category", "tertiary_category")]
    levels = [level for level in levels if level]
    used = {"product_id", "product_name", "brand_name", "ingredients", "price_usd", "highlights", "size", "rating"}
    used |= {"reviews", "primary_category", "secondary_category", "tertiary_category"}
    return ProductRecord(
        source=SOURCES["sephora-products"],
        external_id=product_id,
        name=_clip(_required(row, "product_name"), 500, "product_name"),
        brand=_clip(row.get("brand_name") or None, 200, "brand_name"),
        product_type=_clip(levels[-1] if levels else None, 200, "tertiary_category"),
        categories=_clip(" > ".join(levels) or None, 500, "primary_category"),
        size=_clip(row.get("size") or None, 200, "size"),
        price=price,
        currency=currency,
        url=None,
        rating=parse_float(row.get("rating", ""), "rating", low=0.0, high=5.0),
        review_count=parse_count(row.get("reviews", ""), "reviews"),
        ingredients_raw="\n".join(lines) or None,
        ingredient_lines=lines,
        highlights=highlights or None,
        skin_types=skin_types_from_highlights(highlights),
        attributes={k: v for k, v in row.items() if k not in used and k and v != ""},
    )


_BEST_FOR = re.compile(r"\bbest\s+for\s+(.+?)\s+skin\b", re.I)
_SKIN_WORDS = {"oily": "oily", "dry": "dry", "normal": "normal", "combo": "combination", "combination": "combination"}
_SKIN_WORDS |= {"sensitive": "sensitive"}


def skin_types_from_highlights(highlights: Sequence[str]) -> str | None:
    """Sephora's "Best for Oily, Combo, Normal Skin" -> ",combination,normal,oily,"; None when no highlight says."""
    found: set[str] = set()
    for text in highlights:
        for match in _BEST_FOR.finditer(text):
            words = re.split(r"[,/&]|\band\b", match.group(1).lower())
            found |= {_SKIN_WORDS[w.strip()] for w in words if w.strip() in _SKIN_WORDS}
    return "," + ",".join(sorted(found)) + "," if found else None


# ---------------------------------------------------------------- reviews


@dataclass
class ReviewRecord:
    review_key: str
    source: str
    external_product_id: str
    author_id: str | None
    rating: int
    is_recommended: bool | None
    helpfulness: float | None
    title: str | None
    text: str | None
    skin_type: str | None
    skin_tone: str | None
    eye_color: str | None
    hair_color: str | None
    submitted_on: date | None


def sephora_review(row: Mapping[str, str]) -> ReviewRecord:
    product_id = _required(row, "product_id")
    rating_text = _required(row, "rating")
    try:
        rating = int(float(rating_text))
    except ValueError as err:
        raise RowError(f"rating {rating_text[:20]!r} is not a number") from err
    if not 1 <= rating <= 5:
        raise RowError(f"rating {rating} is outside 1-5")
    submitted = row.get("submission_time", "")
    try:
        submitted_on = date.fromisoformat(submitted[:10]) if submitted else None
    except ValueError as err:
        raise RowError(f"submission_time {submitted[:30]!r} is not a date (YYYY-MM-DD)") from err
    key_parts = [row.get(k, "") for k in ("author_id", "product_id", "submission_time", "review_title", "review_text")]
    key = hashlib.sha256("\x1f".join(["sephora", *key_parts]).encode()).hexdigest()
    return ReviewRecord(
        review_key=key,
        source=SOURCES["sephora-reviews"],
        external_product_id=_clip(product_id, 500, "product_id"),
        author_id=_clip(row.get("author_id") or None, 100, "author_id"),
        rating=rating,
        is_recommended=parse_flag(row.get("is_recommended", ""), "is_recommended"),
        helpfulness=parse_float(row.get("helpfulness", ""), "helpfulness", low=0.0, high=1.0),
        title=row.get("review_title") or None,
        text=row.get("review_text") or None,
        skin_type=_clip((row.get("skin_type") or "").lower() or None, 50, "skin_type"),
        skin_tone=_clip(row.get("skin_tone") or None, 50, "skin_tone"),
        eye_color=_clip(row.get("eye_color") or None, 50, "eye_color"),
        hair_color=_clip(row.get("hair_color") or None, 50, "hair_color"),
        submitted_on=submitted_on,
    )


# ---------------------------------------------------------------- COSING


@dataclass
class ReferenceRecord:
    """What one COSING inventory row or one annex entry says about one ingredient name."""

    name: str
    normalized_name: str
    source: str  # cosing | annex
    synonyms: list[str] = field(default_factory=list)
    cas_numbers: str | None = None
    ec_numbers: str | None = None
    functions: list[str] = field(default_factory=list)
    restriction: str | None = None
    annex_refs: list[str] = field(default_factory=list)
    annex_conditions: str | None = None
    cosing_ref: str | None = None
    description: str | None = None


_ANNEX_REF = re.compile(r"\b(VI|IV|V|III|II)\s*/\s*(\d+[a-z]?)", re.I)


def cosing_ingredient(row: Mapping[str, str]) -> ReferenceRecord:
    name = _required(row, "inci name")
    normalized = normalize_inci(name)
    if not normalized:
        raise RowError("INCI name holds no name")
    if len(normalized) > 1000:
        raise RowError("INCI name is over 1000 characters")
    others = {normalize_inci(row.get(k, "")) for k in ("inn name", "ph. eur. name")}
    restriction = row.get("restriction") or None
    parts = re.split(r"[,;\n]", row.get("function", ""))
    functions = list(dict.fromkeys(f.strip().lower() for f in parts if f.strip()))
    return ReferenceRecord(
        name=normalize_space(name),
        normalized_name=normalized,
        source="cosing",
        synonyms=sorted(s for s in others if s and s != normalized),
        cas_numbers=_clip(row.get("cas no") or None, 1000, "CAS No"),
        ec_numbers=_clip(row.get("ec no") or None, 1000, "EC No"),
        functions=functions,
        restriction=_clip(restriction, 1000, "Restriction"),
        annex_refs=annex_refs(restriction or ""),
        cosing_ref=_clip(row.get("cosing ref no") or None, 20, "COSING Ref No"),
        description=row.get("chem/iupac name / description") or None,
    )


def annex_refs(text: str) -> list[str]:
    refs = []
    for annex, number in _ANNEX_REF.findall(text):
        ref = f"{annex.upper()}/{number.lower()}"
        if ref not in refs:
            refs.append(ref)
    return refs


def strictest_annex(refs: Sequence[str]) -> str | None:
    annexes = [ref.split("/")[0] for ref in refs if ref.split("/")[0] in ANNEX_RANK]
    return min(annexes, key=ANNEX_RANK.__getitem__) if annexes else None


def annex_of_file(path: Path, title_lines: Sequence[str]) -> str | None:
    """Which annex an export is: from its title lines ("Annex III ..."), else from its name (COSING_Annex.II_v2.csv)."""
    for line in title_lines:
        match = re.search(r"\bannex\s+(VI|IV|V|III|II)\b", line, re.I)
        if match:
            return match.group(1).upper()
    match = re.search(r"annex[\s._\-]*(VI|IV|V|III|II)(?![A-Za-z])", path.name, re.I)
    return match.group(1).upper() if match else None


def annex_entries(row: Mapping[str, str], annex: str) -> list[ReferenceRecord]:
    """The INCI names one annex row names, each with the row's reference and conditions; [] for a deleted entry."""
    chemical = row.get("chemical name / inn", "")
    if chemical.strip().lower() in ("moved or deleted", "deleted", ""):
        return []
    reference = _required(row, "reference number")
    number = re.sub(r"\s+", "", reference).lower()
    ref = f"{annex}/{number}"
    names = _annex_names(row, chemical)
    if not names:
        raise RowError("names no ingredient (glossary, identified ingredients and chemical name all empty)")
    conditions = _annex_conditions(row, ref)
    return [
        ReferenceRecord(
            name=name,
            normalized_name=normalize_inci(name),
            source="annex",
            cas_numbers=_clip(row.get("cas number") or None, 1000, "CAS Number"),
            ec_numbers=_clip(row.get("ec number") or None, 1000, "EC Number"),
            annex_refs=[ref],
            annex_conditions=conditions,
        )
        for name in names
        if normalize_inci(name)
    ]


def _annex_names(row: Mapping[str, str], chemical: str) -> list[str]:
    names: list[str] = []
    glossary = row.get("name of common ingredients glossary", "")
    names += [p for p in re.split(r"[;/]", glossary) if p.strip()]
    # Identified substances: INCI names are printed in capitals; "(*)" marks a chemical name outside the glossary.
    for part in row.get("identified ingredients or substances e.g.", "").split(";"):
        part = part.strip()
        if part and not part.startswith("(*)") and part.upper() == part and "," not in part:
            names.append(part)
    if not names:
        plain = re.sub(r"\s*\((?:INN|INNM|USAN|BAN)\)", "", chemical).strip()
        if plain and len(plain.split()) <= 4 and not re.search(r"[,()\[\]]|\band\b|\bits\b", plain, re.I):
            names.append(plain)
    unique: list[str] = []
    for name in (normalize_space(n) for n in names):
        if name and len(name) <= 300 and normalize_inci(name) not in {normalize_inci(u) for u in unique}:
            unique.append(name)
    return unique


def _annex_conditions(row: Mapping[str, str], ref: str) -> str:
    parts = [
        ("scope", row.get("product type, body parts", "")),
        ("maximum", row.get("maximum concentration in ready for use preparation", "")),
        ("other", row.get("other", "")),
        ("warnings", row.get("wording of conditions of use and warnings", "")),
    ]
    shown = "; ".join(f"{label}: {normalize_space(text)}" for label, text in parts if text.strip())
    return f"{ref}" + (f" ({shown})" if shown else "")


# ---------------------------------------------------------------- cells


def parse_price(text: str, default_currency: str, column: str) -> tuple[Decimal | None, str | None]:
    """`£5.20`, `$12`, `35.0`, `1,234.50` -> (Decimal, ISO currency); empty -> (None, None)."""
    text = text.strip()
    if not text:
        return None, None
    currency = default_currency
    for symbol, code in (("£", "GBP"), ("$", "USD"), ("€", "EUR")):
        if symbol in text:
            currency = code
    number = re.sub(r"[£$€\s]|GBP|USD|EUR", "", text).replace(",", "")
    try:
        value = Decimal(number)
    except InvalidOperation as err:
        raise RowError(f"{column} {text[:30]!r} is not a price") from err
    if not value.is_finite() or value < 0 or value > MAX_PRICE:
        raise RowError(f"{column} {text[:30]!r} is outside 0-{MAX_PRICE}")
    return value.quantize(Decimal("0.01")), currency


def parse_float(text: str, column: str, low: float, high: float) -> float | None:
    text = text.strip()
    if not text or text.lower() == "nan":
        return None
    try:
        value = float(text)
    except ValueError as err:
        raise RowError(f"{column} {text[:30]!r} is not a number") from err
    if not low <= value <= high:
        raise RowError(f"{column} {value} is outside {low}-{high}")
    return value


def parse_count(text: str, column: str) -> int | None:
    value = parse_float(text, column, 0.0, 1e9)
    if value is None:
        return None
    if value != int(value):
        raise RowError(f"{column} {text!r} is not a whole number")
    return int(value)


def parse_flag(text: str, column: str) -> bool | None:
    value = text.strip().lower()
    if value in ("", "nan"):
        return None
    if value in ("1", "1.0", "true", "yes"):
        return True
    if value in ("0", "0.0", "false", "no"):
        return False
    raise RowError(f"{column} {text[:20]!r} is not 1/0")


def parse_list_literal(text: str, column: str) -> list[str]:
    """A stringified Python list (`['Water, Glycerin', 'Talc']`) as the files store lists; empty -> []."""
    text = text.strip()
    if not text or text.lower() == "nan":
        return []
    if not text.startswith("["):
        raise RowError(f"{column} is not a list literal (it starts with {text[:20]!r})")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
        raise RowError(f"{column} is not a readable list literal ({type(err).__name__})") from err
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RowError(f"{column} is not a list of strings")
    return [item.strip() for item in value if item.strip()]


def parse_date(text: str) -> date | None:
    for fmt in ("%d/%m/%Y", "%Y-%m-%d"):
        try:
            return datetime.strptime(text.strip(), fmt).date()
        except ValueError:
            continue
    return None


def _required(row: Mapping[str, str], column: str) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        raise RowError(f"{column} is empty")
    return value


def _clip(value: str | None, limit: int, column: str) -> str | None:
    if value is not None and len(value) > limit:
        raise RowError(f"{column} is over {limit} characters ({len(value)})")
    return value
