"""`skinserve catalog ...`: ingest the published files, analyse an ingredient list, recommend, summarise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from skinserve.config import Settings, redacted_url

catalog_app = typer.Typer(
    no_args_is_help=True, help="Products, ingredients and recommendations from the published catalog files."
)


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _engine():
    """The registry engine, refusing one whose schema is not at the head revision (run `skinserve db upgrade`)."""
    from sqlalchemy.exc import OperationalError

    from skinserve.db import migrate
    from skinserve.db.engine import create_registry_engine

    url = Settings.from_env().database_url
    try:
        current = migrate.current_revision(url)
    except OperationalError as err:
        raise _fail(f"cannot reach the registry at {redacted_url(url)}: {err.orig}") from err
    if current != migrate.head_revision():
        raise _fail(f"registry {redacted_url(url)} is at revision {current}; run `skinserve db upgrade` first")
    return create_registry_engine(url)


@catalog_app.command("ingest")
def ingest(
    file: Annotated[Path, typer.Argument(help="A published CSV: product_info.csv, reviews_*.csv, COSING exports...")],
    format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="skincare-clean, sephora-products, sephora-reviews, cosing or cosing-annex (default: "
            "detected from the header)",
        ),
    ] = None,
    annex: Annotated[str | None, typer.Option(help="cosing-annex: II, III, IV, V or VI if not in the file")] = None,
    encoding: Annotated[str, typer.Option(help="auto (UTF-8, or Windows-1252 for a legacy file) or a codec")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Rows per database transaction.")] = 500,
    rejects: Annotated[Path | None, typer.Option(help="Write every rejected row (line, reason) to this CSV.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on the last line.")] = False,
) -> None:
    """Ingest one file, streamed, one transaction per batch; a second run adds nothing. Rejected rows are listed."""
    from skinserve.catalog.ingest import CatalogFileError, CatalogIngestOptions, ingest_catalog_file

    if batch_size < 1:
        raise _fail("--batch-size must be at least 1")
    engine = _engine()
    options = CatalogIngestOptions(
        fmt=format, annex=annex.upper() if annex else None, encoding=encoding, batch_size=batch_size,
        rejects_path=rejects, progress=progress,
    )  # fmt: skip
    try:
        summary = ingest_catalog_file(file, engine, options)
    except CatalogFileError as err:
        raise _fail(str(err)) from err
    finally:
        engine.dispose()
    typer.echo(
        f"{file.name}: {summary.format} ({summary.encoding}), header on line {summary.header_line}: "
        f"{summary.rows} rows in {summary.seconds:.1f} s ({summary.rows_per_s:,.0f} rows/s); "
        f"added {summary.added}, updated {summary.updated}, unchanged {summary.unchanged}, "
        f"skipped {summary.skipped}, rejected {summary.rejected_count}; "
        f"memory {summary.rss_start_mb:.0f} -> {summary.rss_peak_mb:.0f} MB"
    )
    for note in summary.notes:
        typer.echo(f"  note: {note}")
    for problem in summary.rejected[:50]:
        typer.echo(f"  rejected line {problem.line}: {problem.reason}")
    if summary.rejected_count > 50:
        where = f" (all in {rejects})" if rejects else " (pass --rejects FILE for all of them)"
        typer.echo(f"  ... and {summary.rejected_count - 50} more rejected rows{where}")
    if as_json:
        typer.echo(summary.as_json())


@catalog_app.command("analyze")
def analyze(
    text: Annotated[str, typer.Argument(help="An ingredient list as printed on a label ('-' reads stdin).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the analysis as JSON.")] = False,
) -> None:
    """Parse a label, match each entry to COSING, show functions, restrictions and the conditions it targets."""
    import sys

    from skinserve.catalog.analysis import analyze_ingredient_text
    from skinserve.catalog.knowledge import default_knowledge
    from skinserve.catalog.matching import load_ingredient_index
    from skinserve.errors import ClientError

    if text == "-":
        text = sys.stdin.read()
    engine = _engine()
    try:
        analysis = analyze_ingredient_text(text, load_ingredient_index(engine, default_knowledge()))
    except ClientError as err:
        raise _fail(str(err)) from err
    finally:
        engine.dispose()
    if as_json:
        typer.echo(analysis.model_dump_json(indent=2))
        return
    if not analysis.reference_ingredients:
        typer.echo("note: no COSING entries in the catalog, so nothing matches (skinserve catalog ingest COSING.csv)")
    for item in analysis.ingredients:
        match = item.match
        shown = f"{match.kind}" + (f" {match.inci_name}" if match.inci_name else "")
        shown += f" ({match.score:.0f})" if match.kind == "fuzzy" and match.score is not None else ""
        extra = []
        if item.percent is not None:
            extra.append(f"{item.percent:g}%")
        if item.may_contain:
            extra.append("may contain")
        if item.restriction:
            extra.append(f"annex {item.restriction.annex} {','.join(item.restriction.refs)}")
        head = f"{item.variation + ' ' if item.variation else ''}{item.position:>3}. {item.label_text}"
        typer.echo(f"{head:60s} {shown}{'  [' + '; '.join(extra) + ']' if extra else ''}")
        if item.functions:
            typer.echo(f"{'':8s}functions: {', '.join(item.functions)}")
        for target in item.targets:
            typer.echo(f"{'':8s}-> {target.condition}: {target.reason}")
        for caution in item.unsuitable_for:
            typer.echo(f"{'':8s}!! not for {caution.skin_type} skin: {caution.reason}")
    for ignored in analysis.ignored:
        typer.echo(f"  left out: {ignored.text!r} ({ignored.reason})")
    counts = analysis.match_counts
    typer.echo(f"matches: {counts}; prohibited: {analysis.prohibited}; restricted: {analysis.restricted}")


@catalog_app.command("recommend")
def recommend(
    conditions: Annotated[
        str | None, typer.Option(help="condition:severity pairs, e.g. acne:severe,redness:mild")
    ] = None,
    analysis: Annotated[Path | None, typer.Option(help="An /analyze answer saved as JSON.")] = None,
    skin_type: Annotated[str | None, typer.Option(help="oily, dry, normal, combination or sensitive")] = None,
    category: Annotated[str | None, typer.Option(help="Substring of the category path, e.g. serum.")] = None,
    max_price: Annotated[float | None, typer.Option(help="Budget.")] = None,
    currency: Annotated[str | None, typer.Option(help="Currency of the budget (USD, GBP).")] = None,
    limit: Annotated[int, typer.Option()] = 5,
    exclude_restricted: Annotated[bool, typer.Option(help="Leave out other Annex III ingredients too.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rank catalog products for conditions (or a saved analysis), with the reasons for each."""
    from skinserve.catalog.knowledge import default_knowledge
    from skinserve.catalog.recommend import Recommender
    from skinserve.catalog.routes import parse_body
    from skinserve.catalog.schemas import RecommendRequest
    from skinserve.errors import ClientError

    body: dict = {"skin_type": skin_type, "category": category, "max_price": max_price, "currency": currency}
    body |= {"limit": limit, "exclude_restricted": exclude_restricted}
    if analysis is not None:
        body["analysis"] = json.loads(analysis.read_text())
    if conditions:
        pairs = [item.partition(":") for item in conditions.split(",") if item.strip()]
        body["conditions"] = [{"name": n.strip(), "severity": (s.strip() or "moderate")} for n, _, s in pairs]
    engine = _engine()
    try:
        answer = Recommender(engine, default_knowledge()).recommend(
            parse_body(RecommendRequest, {k: v for k, v in body.items() if v is not None})
        )
    except ClientError as err:
        raise _fail(str(err)) from err
    finally:
        engine.dispose()
    if as_json:
        typer.echo(answer.model_dump_json(indent=2))
        return
    typer.echo("for " + ", ".join(f"{c.name} ({c.severity}, weight {c.weight:g})" for c in answer.conditions))
    for product in answer.products:
        price = f"{product.price:.2f} {product.currency}" if product.price is not None else "no price"
        rating = f"{product.rating:.2f} ({product.review_count} reviews)" if product.rating is not None else "unrated"
        typer.echo(f"{product.rank}. {product.brand or ''} {product.name} [{product.product_type}] {price}, {rating}")
        typer.echo(f"   score {product.score:g}, {product.matched_actives} active(s)")
        for reason in product.reasons:
            typer.echo(f"   {reason.ingredient} -> {reason.condition}: {reason.reason}")
    if answer.note:
        typer.echo(answer.note)


@catalog_app.command("summary")
def summary(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What the catalog holds."""
    from skinserve.catalog.summary import catalog_summary

    engine = _engine()
    try:
        data = catalog_summary(engine)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(data, sort_keys=True))
        return
    typer.echo(f"catalog in {redacted_url(Settings.from_env().database_url)}: {data['products']} products")
    for source, count in sorted(data["products_per_source"].items()):
        typer.echo(f"  source {source}: {count}")
    typer.echo(
        f"  ingredient entries: {data['ingredient_entries']} ({data['ingredient_entries_matched']} matched to a "
        f"reference ingredient; {data['distinct_ingredient_names']} distinct names)"
    )
    typer.echo(f"  reference ingredients: {data['reference_ingredients']} {data['reference_per_source']}")
    typer.echo(f"  per annex: {dict(sorted(data['reference_per_annex'].items()))}")
    typer.echo(f"  reviews: {data['reviews']} ({data['reviews_linked']} linked to a product)")
    if data["review_skin_types"]:
        typer.echo(f"  reviewers' skin types: {dict(sorted(data['review_skin_types'].items()))}")
