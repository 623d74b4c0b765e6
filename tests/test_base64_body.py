"""The JSON base64 input form: the same bytes, limits and errors as the other forms; hostile bodies get 4xx."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from skinserve.serve.uploads import (
    UnsupportedUpload,
    UploadError,
    UploadLimits,
    UploadTooLarge,
    decode_upload,
    encoded_limit,
    image_from_json_body,
    json_body_limit,
)
from tests.photos import GRACE_HOPPER

LIMIT = UploadLimits().max_bytes


def body(value) -> bytes:
    return json.dumps({"image_base64": value}).encode()


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return GRACE_HOPPER.read_bytes()


def test_base64_gives_back_the_exact_bytes_which_decode_as_the_photo(jpeg):
    data = image_from_json_body(body(base64.b64encode(jpeg).decode()), LIMIT)
    assert data == jpeg
    assert decode_upload(data, UploadLimits()).width == 512


@pytest.mark.parametrize(
    "encode",
    [
        lambda b: "data:image/jpeg;base64," + base64.b64encode(b).decode(),
        lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="),
        lambda b: base64.encodebytes(b).decode(),  # MIME: a line break every 76 characters
    ],
    ids=["data-url", "urlsafe-unpadded", "mime-lines"],
)
def test_the_usual_encodings_are_accepted(jpeg, encode):
    assert image_from_json_body(body(encode(jpeg)), LIMIT) == jpeg


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (json.dumps({"image": "abc"}).encode(), 'no "image_base64" field.*image'),
        (json.dumps(["image_base64"]).encode(), 'no "image_base64" field'),
        (body(12), "must be a string"),
        (body(""), "empty"),
        (body("!!!!not-base64$$"), "not valid base64"),
        (body("abcde"), "not valid base64"),
        (body("data:image/png,aGVsbG8="), "must be base64-encoded"),
    ],
    ids=["broken-json", "not-utf8", "no-field", "a-list", "not-a-string", "empty", "broken", "bad-length", "no-b64"],
)
def test_bad_bodies_are_400s_that_say_what_to_send(payload, match):
    with pytest.raises(UploadError, match=match) as refused:
        image_from_json_body(payload, LIMIT)
    assert refused.value.status == 400


def test_a_data_url_that_is_not_an_image_is_415():
    with pytest.raises(UnsupportedUpload) as refused:
        image_from_json_body(body("data:text/html;base64,PGI+aGk8L2I+"), LIMIT)
    assert refused.value.status == 415


def test_base64_of_a_non_image_is_refused_by_the_decoder_like_any_upload():
    data = image_from_json_body(body(base64.b64encode(b"%PDF-1.7 not an image").decode()), LIMIT)
    with pytest.raises(UnsupportedUpload):
        decode_upload(data, UploadLimits())


def test_the_limit_is_checked_on_the_encoded_text_before_decoding(monkeypatch):
    calls = []
    monkeypatch.setattr(base64, "b64decode", lambda *a, **k: calls.append(a))
    with pytest.raises(UploadTooLarge) as refused:
        image_from_json_body(body("A" * (encoded_limit(1000) + 8)), 1000)
    assert refused.value.status == 413 and calls == []


def test_the_limit_is_checked_again_on_the_decoded_bytes():
    payload = base64.b64encode(b"\x00" * 1001).decode()  # 1336 characters, within 1336 (= 4 * ceil(1000 / 3))
    with pytest.raises(UploadTooLarge, match="1001 bytes exceeds the limit of 1000"):
        image_from_json_body(body(payload), 1000)
    assert image_from_json_body(body(base64.b64encode(b"\x01" * 1000).decode()), 1000) == b"\x01" * 1000


def test_a_body_within_json_body_limit_holds_any_image_within_the_byte_limit():
    data = b"\x89" * LIMIT
    payload = json.dumps({"image_base64": "data:image/png;base64," + base64.encodebytes(data).decode()}).encode()
    assert len(payload) <= json_body_limit(LIMIT)
    assert image_from_json_body(payload, LIMIT) == data


def test_hostile_images_in_base64_reach_the_decoder_intact():
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = image_from_json_body(body(base64.b64encode(buffer.getvalue()).decode()), LIMIT)
    assert decode_upload(data, UploadLimits()).width == 1
