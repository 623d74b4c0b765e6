"""Catalog speed: ingest rates of the published formats, and recommendation latency on a 10,000-product catalog.

    python benchmarks/catalog.py --database-url postgresql+psycopg://USER@HOST/DB [--products 10000]
                                 [--reviews 200000] [--requests 500] [--out runs/catalog-bench]

The database must be migrated (`skinserve db upgrade`); the script EMPTIES its catalog tables first. It writes a
Sephora-shaped product_info.csv, a reviews_*.csv and a COSING export with title lines (the vocabulary: common INCI
names, the project's actives, fragrance allergens, an Annex II substance in 0.5% of products), ingests them through
`skinserve.catalog.ingest` (rows/s and memory), then times `Recommender.recommend` on random requests (one to three
conditions with severities; half with a skin type, a third with a budget, a fifth with a category) against two
baselines measured in the same run: the trivial popularity query (top rated, ignores the analysis) and the same
ranking done in Python over the rows a plain query fetches. Prints a table and saves JSON. No timing is asserted.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from skinserve.catalog.formats import COLUMNS
from skinserve.catalog.ingest import CatalogIngestOptions, ingest_catalog_file
from skinserve.catalog.knowledge import default_knowledge
from skinserve.catalog.recommend import Recommender
from skinserve.catalog.schemas import RecommendRequest
from skinserve.config import redacted_url
from skinserve.db import migrate
from skinserve.db.engine import create_registry_engine
from skinserve.labels import CONDITIONS, SKIN_TYPES

TARGET_P99_MS = 20.0
# Filler a label lists besides its actives (those are added separately, 0-4 per product, from actives.yaml).
BASE = [
    "Glycerin",
    "Butylene Glycol",
    "Propanediol",
    "Dimethicone",
    "Cetearyl Alcohol",
    "Caprylic/Capric Triglyceride",
    "Squalane",
    "Xanthan Gum",
    "Carbomer",
    "Sodium Hydroxide",
    "Citric Acid",
    "Phenoxyethanol",
    "Ethylhexylglycerin",
    "Tocopherol",
    "Disodium EDTA",
    "Pentylene Glycol",
    "1,2-Hexanediol",
    "Cetyl Alcohol",
    "Stearic Acid",
    "Glyceryl Stearate",
    "PEG-100 Stearate",
    "Polysorbate 20",
    "Isohexadecane",
    "Hydroxyethylcellulose",
    "Sodium PCA",
    "Trehalose",
    "Betaine",
    "Sodium Citrate",
    "Potassium Sorbate",
    "Sodium Benzoate",
    "Caprylyl Glycol",
    "Isododecane",
    "Cyclopentasiloxane",
    "Helianthus Annuus Seed Oil",
    "Simmondsia Chinensis Seed Oil",
    "Butyrospermum Parkii Butter",
    "Aloe Barbadensis Leaf Juice",
    "Camellia Sinensis Leaf Extract",
    "Chamomilla Recutita Flower Extract",
    "Hydrogenated Lecithin",
    "Lecithin",
    "Cholesterol",
    "Phytosphingosine",
    "Sodium Lauroyl Lactylate",
    "Polyglyceryl-3 Diisostearate",
    "Cetearyl Olivate",
    "Sorbitan Olivate",
    "Arginine",
    "Sodium Chloride",
    "Silica",
    "Mica",
    "Talc",
    "Iron Oxides",
    "Behenyl Alcohol",
    "Ammonium Acryloyldimethyltaurate/VP Copolymer",
    "Urea",
]
FRAGRANCE = ["Parfum", "Limonene", "Linalool", "Citral", "Geraniol", "Citronellol"]
PROHIBITED = "Hydroquinone"
BRANDS = [f"Brand {i:03d}" for i in range(150)]
CATEGORIES = [
    ("Skincare", "Treatments", "Face Serums"),
    ("Skincare", "Moisturizers", "Moisturizers"),
    ("Skincare", "Cleansers", "Face Wash & Cleansers"),
    ("Skincare", "Treatments", "Blemish & Acne Treatments"),
    ("Skincare", "Sunscreen", "Face Sunscreen"),
    ("Skincare", "Eye Care", "Eye Creams & Treatments"),
    ("Skincare", "Masks", "Face Masks"),
    ("Makeup", "Face", "Foundation"),
]
SKIN_WORDS = {"oily": "Oily", "dry": "Dry", "normal": "Normal", "combination": "Combo", "sensitive": "Sensitive"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a migrated registry; its catalog tables are emptied")
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--reviews", type=int, default=200_000, help="rows of the generated reviews file")
    parser.add_argument("--requests", type=int, default=500, help="timed recommendations per method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/catalog-bench"))
    return parser.parse_args(argv)


def write_catalog_files(folder: Path, products: int, reviews: int, seed: int) -> dict[str, Path]:
    rng = random.Random(seed)
    actives = [active.inci.title() for active in default_knowledge().actives]
    paths = {
        "cosing": folder / "COSING_Ingredients-Fragrance Inventory_v2.csv",
        "sephora-products": folder / "product_info.csv",
        "sephora-reviews": folder / "reviews_0-250.csv",
    }
    with paths["cosing"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow(["The information below is based on the data that is available in the CosIng database."])
        writer.writerow([])
        writer.writerow(["COSING Ref No", "INCI name", "INN name", "Ph. Eur. Name", "CAS No", "EC No",
                         "Chem/IUPAC Name / Description", "Restriction", "Function", "Update Date"])  # fmt: skip
        names = ["Aqua", *BASE, *actives, *FRAGRANCE, PROHIBITED]
        for ref, name in enumerate(dict.fromkeys(n.upper() for n in names), start=30000):
            restriction = {"LIMONENE": "III/88", "LINALOOL": "III/84", "CITRAL": "III/70", "GERANIOL": "III/78",
                           "CITRONELLOL": "III/86", "SALICYLIC ACID": "III/98, V/3", "RETINOL": "III/375",
                           PROHIBITED.upper(): "II/1339, III/14", "PHENOXYETHANOL": "V/29"}.get(name, "")  # fmt: skip
            writer.writerow([ref, name, "", "", "", "", name.title(), restriction, "SKIN CONDITIONING", "13/01/2022"])
        for ref in range(1, 2_000):  # the rest of a COSING-sized vocabulary the labels do not use
            writer.writerow([ref, f"PLANT {ref} EXTRACT", "", "", "", "", "", "", "SKIN CONDITIONING", "13/01/2022"])
    header = list(COLUMNS["sephora-products"])
    ids = [f"P{400000 + i}" for i in range(products)]
    with paths["sephora-products"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for product_id in ids:
            writer.writerow([_product(rng, product_id, actives).get(c, "") for c in header])
    with paths["sephora-reviews"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS["sephora-reviews"])
        for i in range(reviews):
            writer.writerow(
                [i, rng.randrange(10**9, 10**11), rng.randint(1, 5), rng.choice(("1.0", "0.0", "")), "", 1, 0, 1,
                 f"2022-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                 "Used it for a month, my skin, \"honestly\", looks better." * rng.randint(1, 4), "Good",
                 "light", "brown", rng.choice(("dry", "oily", "combination", "normal", "")), "black",
                 rng.choice(ids), "name", "brand", "20.0"]
            )  # fmt: skip
    return paths


def _product(rng: random.Random, product_id: str, actives: list[str]) -> dict[str, str]:
    names = ["Water"] + rng.sample(BASE, rng.randint(12, 30))
    for _ in range(rng.choice((0, 1, 1, 2, 2, 3, 4))):
        names.insert(rng.randint(1, len(names)), rng.choice(actives))
    if rng.random() < 0.3:
        names += rng.sample(FRAGRANCE, rng.randint(1, 3))
    if rng.random() < 0.005:
        names.insert(2, PROHIBITED)
    categories = rng.choice(CATEGORIES)
    highlights = [f"Good for: {rng.choice(('Acne/Blemishes', 'Dryness', 'Dark spots', 'Pores'))}"]
    if rng.random() < 0.4:
        types = rng.sample(list(SKIN_WORDS.values())[:4], rng.randint(1, 3))
        highlights.append(f"Best for {', '.join(types)} Skin")
    rated = rng.random() < 0.85
    return {
        "product_id": product_id,
        "product_name": f"Product {product_id}",
        "brand_id": "1",
        "brand_name": rng.choice(BRANDS),
        "rating": f"{rng.uniform(2.5, 5.0):.4f}" if rated else "",
        "reviews": f"{int(rng.lognormvariate(4, 1.5))}.0" if rated else "",
        "ingredients": str([", ".join(dict.fromkeys(names)) + "."]),
        "price_usd": f"{min(400.0, rng.lognormvariate(3.3, 0.6)):.1f}",
        "highlights": str(highlights),
        "primary_category": categories[0],
        "secondary_category": categories[1],
        "tertiary_category": categories[2],
    }


def random_request(rng: random.Random) -> RecommendRequest:
    conditions = [
        {"name": name, "severity": rng.choice(("mild", "moderate", "severe"))}
        for name in rng.sample(CONDITIONS, rng.randint(1, 3))
    ]
    body: dict[str, Any] = {"conditions": conditions, "limit": 10}
    if rng.random() < 0.5:
        body["skin_type"] = rng.choice(SKIN_TYPES)
    if rng.random() < 0.33:
        body |= {"max_price": rng.choice((15, 30, 60)), "currency": "USD"}
    if rng.random() < 0.2:
        body["category"] = rng.choice(("serum", "moisturizer", "sunscreen", "cleanser"))
    return RecommendRequest.model_validate(body)


def popularity(engine, request: RecommendRequest) -> list:
    """The trivial recommender: the best-rated products, whatever the analysis says."""
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT id, name, rating FROM products WHERE rating IS NOT NULL ORDER BY rating DESC, id LIMIT :n"),
            {"n": request.limit},
        ).all()


def python_ranking(engine, recommender: Recommender, request: RecommendRequest) -> list:
    """The same ranking without the SQL aggregation: fetch every matching row, score in Python."""
    from skinserve.catalog.recommend import condition_weights

    needs = {n.name: n.weight for n in condition_weights(request)}
    targets = recommender.knowledge.target_names(needs)
    names = sorted(targets)
    placeholders = ", ".join(f":n{i}" for i in range(len(names)))
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                f"SELECT pi.product_id, pi.ingredient_name, p.rating, p.review_count, p.price "
                f"FROM product_ingredients pi JOIN products p ON p.id = pi.product_id "
                f"WHERE pi.ingredient_name IN ({placeholders})"
            ),
            {f"n{i}": n for i, n in enumerate(names)},
        ).all()
    scores: dict[int, dict[str, float]] = {}
    meta = {}
    for product_id, name, rating, reviews, price in rows:
        for target in targets[name].targets:
            if target.condition in needs:
                best = scores.setdefault(product_id, {})
                best[target.condition] = max(best.get(target.condition, 0.0), needs[target.condition])
        meta[product_id] = (rating or 0.0, reviews or 0, float(price or 0))
    ranked = sorted(scores, key=lambda p: (-sum(scores[p].values()), -meta[p][0], meta[p][2], p))
    return ranked[: request.limit]


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    cut = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": cut[49], "p95": cut[94], "p99": cut[98], "max": ordered[-1], "mean": statistics.fmean(ordered)}


def timed(call, requests: list[RecommendRequest], warmup: int = 20) -> list[float]:
    for request in requests[:warmup]:
        call(request)
    samples = []
    for request in requests:
        started = time.perf_counter()
        call(request)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def empty_catalog(engine) -> None:
    with engine.begin() as connection:
        for table in ("product_ingredients", "reviews", "products", "ingredients"):
            connection.execute(text(f"DELETE FROM {table}"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if migrate.current_revision(args.database_url) != migrate.head_revision():
        print(f"{redacted_url(args.database_url)} is not migrated: run `skinserve db upgrade` against it first")
        return 2
    engine = create_registry_engine(args.database_url)
    empty_catalog(engine)
    ingest_rows = []
    with tempfile.TemporaryDirectory(prefix="catalog-bench-") as scratch:
        started = time.perf_counter()
        files = write_catalog_files(Path(scratch), args.products, args.reviews, args.seed)
        print(f"wrote the files in {time.perf_counter() - started:.1f} s")
        for fmt in ("cosing", "sephora-products", "sephora-reviews"):
            path = files[fmt]
            summary = ingest_catalog_file(path, engine, CatalogIngestOptions(batch_size=1000))
            again = ingest_catalog_file(path, engine, CatalogIngestOptions(batch_size=1000))
            ingest_rows.append(
                {
                    "format": fmt, "mb": path.stat().st_size / 2**20, "rows": summary.rows, "added": summary.added,
                    "seconds": summary.seconds, "rows_per_s": summary.rows_per_s,
                    "rss_start_mb": summary.rss_start_mb, "rss_peak_mb": summary.rss_peak_mb,
                    "rerun_rows_per_s": again.rows_per_s, "rerun_added": again.added,
                }
            )  # fmt: skip
    load_before = os.getloadavg()
    recommender = Recommender(engine, default_knowledge())
    rng = random.Random(args.seed + 1)
    requests = [random_request(rng) for _ in range(args.requests)]
    methods = {
        "skinserve Recommender (ranking query + reasons query)": lambda r: recommender.recommend(r),
        "baseline: popularity (one query, ignores the analysis)": lambda r: popularity(engine, r),
        "baseline: same ranking in Python over fetched rows": lambda r: python_ranking(engine, recommender, r),
    }
    latency = {name: percentiles(timed(call, requests)) for name, call in methods.items()}
    with engine.connect() as connection:
        entries = connection.execute(text("SELECT COUNT(*) FROM product_ingredients")).scalar_one()
        reference = connection.execute(text("SELECT COUNT(*) FROM ingredients")).scalar_one()
    engine.dispose()
    report = {
        "database": engine.dialect.name,
        "database_url": redacted_url(args.database_url),
        "products": args.products,
        "ingredient_entries": entries,
        "reference_ingredients": reference,
        "requests": args.requests,
        "ingest": ingest_rows,
        "latency_ms": latency,
        "target_p99_ms": TARGET_P99_MS,
        "load_average_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "machine": platform.platform(),
    }
    print_report(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "catalog.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {args.out / 'catalog.json'}")
    return 0


def print_report(report: dict[str, Any]) -> None:
    print(
        f"\ncatalog on {report['database']}: {report['products']:,} products, {report['ingredient_entries']:,} "
        f"ingredient entries, {report['reference_ingredients']:,} reference ingredients"
    )
    print("\n| ingest | MB | rows | rows/s | RSS start -> peak MB | second run rows/s (added) |")
    print("|---|---|---|---|---|---|")
    for row in report["ingest"]:
        print(
            f"| {row['format']} | {row['mb']:.1f} | {row['rows']:,} | {row['rows_per_s']:,.0f} | "
            f"{row['rss_start_mb']:.0f} -> {row['rss_peak_mb']:.0f} | {row['rerun_rows_per_s']:,.0f} "
            f"({row['rerun_added']}) |"
        )
    before, after = report["load_average_1m"]
    print(f"\nmachine: {report['cpus']} CPUs, 1-minute load average {before} before the timings, {after} after")
    print(f"\n| recommendation, {report['requests']} requests | p50 ms | p95 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    for name, stats in report["latency_ms"].items():
        print(f"| {name} | {stats['p50']:.2f} | {stats['p95']:.2f} | {stats['p99']:.2f} | {stats['max']:.2f} |")
    p99 = next(iter(report["latency_ms"].values()))["p99"]
    verdict = "met" if p99 <= report["target_p99_ms"] else "MISSED"
    print(f"\ntarget: p99 <= {report['target_p99_ms']:.0f} ms for the recommender: {verdict} ({p99:.2f} ms)")


if __name__ == "__main__":
    sys.exit(main())
