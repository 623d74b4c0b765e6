"""The analysis against the real server, on real photos: the face and quality stage (warn and enforce), skin type,
regions, the heatmap route, the JSON base64 form, and the Shine app's `/infer` contract, field by field."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from loadtests.models import build_model_store
from skinserve.db import migrate
from skinserve.db.engine import create_registry_engine
from skinserve.labels import CONDITIONS, SHINE_SEVERITY_WORDS, SKIN_TYPES
from skinserve.serve.process import start_service

from .catalog_data import ingest_all
from .photos import CHINA, FLOWER, GRACE_HOPPER

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REGION_NAMES = {"left_cheek", "right_cheek", "forehead", "t_zone", "chin"}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, str]:
    """A tiny model with a skin-type head and 3x3 class activation maps (test_efficientnet at 96 px)."""
    root = tmp_path_factory.mktemp("analysis-store")
    train = ("--set", "skin_type_head=true")
    return build_model_store(root, "skin-analysis:test", "test_efficientnet", 96, train_args=train)


def server_env(tmp_path_factory, store, postgres_url, **settings: str) -> tuple[dict[str, str], object]:
    workdir = tmp_path_factory.mktemp("analysis-server")
    env = store | {
        "SKINSERVE_DATABASE_URL": postgres_url,
        "SKINSERVE_DATA_DIR": str(workdir / "data"),
        "SKINSERVE_SPOOL_DIR": str(workdir / "spool"),
        "SKINSERVE_ORT_THREADS": "1",
    }
    return env | settings, workdir


@pytest.fixture(scope="module")
def catalog_url(tmp_path_factory) -> str:
    """The fixture catalog (Sephora, Skincare Products Clean, COSING) in a database of its own."""
    url = f"sqlite:///{tmp_path_factory.mktemp('catalog') / 'catalog.db'}"
    migrate.upgrade(url)
    engine = create_registry_engine(url)
    ingest_all(engine)
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def warn(tmp_path_factory, store, postgres_url, catalog_url):
    env, workdir = server_env(tmp_path_factory, store, postgres_url, SKINSERVE_CATALOG_DATABASE_URL=catalog_url)
    running = start_service(env, workdir / "server.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def enforce(tmp_path_factory, store, postgres_url):
    env, workdir = server_env(tmp_path_factory, store, postgres_url, SKINSERVE_FACE_CHECK="enforce")
    running = start_service(env, workdir / "server.log")
    yield running
    running.stop()


def post(server, path: str, photo, **kwargs) -> httpx.Response:
    data = photo.read_bytes() if hasattr(photo, "read_bytes") else photo
    return httpx.post(f"{server.url}{path}", files={"image": ("photo.jpg", data, "image/jpeg")}, timeout=60, **kwargs)


def test_a_face_is_found_in_grace_hopper_and_the_answer_carries_face_quality_and_skin_type(warn):
    body = post(warn, "/analyze", GRACE_HOPPER).json()
    x, y, w, h = body["face"]["box"]
    assert 100 <= x <= 180 and 60 <= y <= 140 and 200 <= w <= 300 and 200 <= h <= 300  # in the upload's pixels
    assert body["quality"]["face_count"] == 1 and "no_face" not in body["quality"]["warnings"]
    assert body["skin_type"]["label"] in SKIN_TYPES
    assert set(body["skin_type"]["probabilities"]) == set(SKIN_TYPES)
    assert sum(body["skin_type"]["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert body["regions"] is None  # only when asked for


@pytest.mark.parametrize("photo", [CHINA, FLOWER], ids=["china", "flower"])
def test_a_photo_without_a_face_is_answered_with_the_warning_in_warn_mode(warn, photo):
    response = post(warn, "/api/v1/ml/analyze-condition", photo)
    assert response.status_code == 200
    body = response.json()
    assert body["face"] is None and body["quality"]["warnings"][0] == "no_face"
    assert set(body["conditions"]) == set(CONDITIONS)


@pytest.mark.parametrize("photo", [CHINA, FLOWER], ids=["china", "flower"])
def test_enforce_mode_refuses_a_photo_without_a_face_with_422_no_face(enforce, photo):
    response = post(enforce, "/analyze", photo)
    assert response.status_code == 422
    assert response.json()["code"] == "no_face" and "face" in response.json()["error"]


def test_enforce_mode_answers_a_face(enforce):
    assert post(enforce, "/infer", GRACE_HOPPER).status_code == 200


def test_regions_are_placed_on_the_face_box(warn):
    body = post(warn, "/analyze", GRACE_HOPPER, params={"regions": "true"}).json()
    regions = body["regions"]
    assert regions["placed_on"] == "face" and set(regions["regions"]) == REGION_NAMES
    fx, fy, fw, fh = body["face"]["box"]
    for name, region in regions["regions"].items():
        if region is None:  # outside the model input's square
            continue
        x, y, w, h = region["box"]
        assert fx - 2 <= x and x + w <= fx + fw + 2 and fy - 2 <= y <= fy + fh, name  # on the face
        assert set(region["conditions"]) == set(CONDITIONS)
    without_face = post(warn, "/analyze", CHINA, params={"regions": "true"}).json()["regions"]
    assert without_face["placed_on"] == "image"


def test_the_heatmap_route_returns_a_png_of_the_photo(warn):
    response = post(warn, "/api/v1/ml/explain", GRACE_HOPPER, params={"condition": "redness"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-condition"] == "redness"
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.format == "PNG" and max(image.size) == 512  # the photo itself, its longest side scaled down
    unknown = post(warn, "/api/v1/ml/explain", GRACE_HOPPER, params={"condition": "wrinkles"})
    assert unknown.status_code == 422 and unknown.json()["code"] == "invalid_input"


def test_the_json_base64_form_gives_the_answer_of_the_multipart_form(warn):
    data = GRACE_HOPPER.read_bytes()
    multipart = post(warn, "/analyze", data).json()
    as_json = httpx.post(
        f"{warn.url}/analyze", json={"image_base64": base64.b64encode(data).decode()}, timeout=60
    ).json()
    assert as_json["image"] == multipart["image"] and as_json["face"] == multipart["face"]
    for condition in CONDITIONS:
        assert as_json["conditions"][condition]["probability"] == pytest.approx(
            multipart["conditions"][condition]["probability"], abs=1e-5
        )


def test_the_shine_infer_contract(warn):
    """The Shine inference server's answer, field by field, with the integration guide's metadata."""
    body = post(warn, "/infer", GRACE_HOPPER).json()
    assert set(body) == {"concerns", "region_concerns", "metadata", "recommendations"}
    assert [c["name"] for c in body["concerns"]] == [c.replace("_", " ").title() for c in CONDITIONS]
    for concern, condition in zip(body["concerns"], CONDITIONS, strict=True):
        assert set(concern) == {"name", "severity", "percentage", "description"}
        assert concern["severity"] in ("none", *SHINE_SEVERITY_WORDS[condition])
        assert isinstance(concern["percentage"], float) and 0 <= concern["percentage"] <= 100
        assert round(concern["percentage"], 1) == concern["percentage"]
        assert isinstance(concern["description"], str) and concern["description"]
    assert set(body["region_concerns"]) == REGION_NAMES
    for concerns in body["region_concerns"].values():
        for concern in concerns:
            assert set(concern) == {"name", "severity", "percentage"}
    assert set(body["metadata"]) == {"imageQuality", "lightingCondition", "skinType"}
    assert body["metadata"]["skinType"] in SKIN_TYPES
    assert body["metadata"]["imageQuality"] in ("good", "fair", "poor")
    assert body["metadata"]["lightingCondition"] in ("good", "dark", "bright")
    for product in body["recommendations"]:  # from the catalog, for the conditions found
        assert {"product", "reason", "product_id", "conditions"} <= set(product)
    no_regions = post(warn, "/infer", GRACE_HOPPER, params={"regions": "false"}).json()
    assert no_regions["region_concerns"] is None


def test_the_model_route_says_what_the_model_can_answer(warn):
    info = httpx.get(f"{warn.url}/model", timeout=30).json()
    assert info["skin_types"] == list(SKIN_TYPES) and info["regions"] is True and info["face_check"] == "warn"
    assert info["face_crop_margin"] is None  # trained on whole images: served on whole images


def test_recommendations_and_ingredient_analysis_come_from_the_catalog(warn):
    asked = {"conditions": [{"name": "acne", "severity": "moderate"}], "skin_type": "oily", "limit": 3}
    answer = httpx.post(f"{warn.url}/api/v1/ml/recommend", json=asked, timeout=60)
    assert answer.status_code == 200, answer.text
    products = answer.json()["products"]
    assert products and all(any(r["condition"] == "acne" for r in p["reasons"]) for p in products)
    label = {"ingredients": "Aqua (Water), Niacinamide, Zinc PCA, Salicylic Acid*"}
    analysed = httpx.post(f"{warn.url}/api/v1/ingredients/analyze", json=label, timeout=60).json()
    kinds = {i["name"]: i["match"]["kind"] for i in analysed["ingredients"]}
    assert kinds and set(kinds.values()) <= {"exact", "synonym", "fuzzy", "none"}
    bad = httpx.post(f"{warn.url}/api/v1/ml/recommend", json={"conditions": "acne"}, timeout=60)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_input"


def test_without_a_catalog_recommend_is_503_no_catalog_and_infer_still_answers(enforce):
    asked = {"conditions": [{"name": "acne", "severity": "mild"}]}
    answer = httpx.post(f"{enforce.url}/api/v1/ml/recommend", json=asked, timeout=60)
    assert answer.status_code == 503 and answer.json()["code"] == "no_catalog"
    assert post(enforce, "/infer", GRACE_HOPPER).json()["recommendations"] == []
