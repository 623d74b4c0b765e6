"""The service's response documents (pydantic): they are the JSON schema the OpenAPI spec publishes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from skinserve.serve.analysis import SkinTypeAnswer
from skinserve.serve.quality import FaceAnswer, QualityAnswer
from skinserve.serve.regions import RegionsAnswer
from skinserve.serve.shine import ShineAnswer

SeverityLabel = Literal["none", "mild", "moderate", "severe"]


class SeverityScore(BaseModel):
    label: SeverityLabel = Field(description="most likely present level when the condition is present, else none")
    probabilities: dict[str, float] = Field(description="softmax over none, mild, moderate, severe")


class ConditionScore(BaseModel):
    probability: float = Field(ge=0, le=1, description="sigmoid of the condition logit")
    present: bool = Field(description="probability >= the condition's tuned threshold")
    severity: SeverityScore


class ModelRef(BaseModel):
    name: str
    version: str


class Timings(BaseModel):
    decode_ms: float = Field(description="upload parsing, decode and preprocessing")
    inference_ms: float = Field(description="queueing in the batch dispatcher plus the model call")
    total_ms: float


class UploadInfo(BaseModel):
    sha256: str
    width: int
    height: int
    bytes: int


class Analysis(BaseModel):
    request_id: str
    model: ModelRef
    conditions: dict[str, ConditionScore] = Field(description="the 7 conditions in their fixed order")
    primary_concern: str | None = Field(description="the present condition with the highest probability")
    healthy: bool = Field(description="no condition present")
    skin_type: SkinTypeAnswer | None = Field(default=None, description="null: the model has no skin-type head")
    face: FaceAnswer | None = Field(default=None, description="the largest face found; null: none, or the check off")
    quality: QualityAnswer | None = Field(default=None, description="null with SKINSERVE_FACE_CHECK=off")
    regions: RegionsAnswer | None = Field(default=None, description="with ?regions=true: scores per facial region")
    batch_size: int = Field(description="images in the model call that served this one")
    image: UploadInfo
    timings: Timings


class BatchAnalysis(BaseModel):
    results: list[Analysis]


class Batching(BaseModel):
    enabled: bool
    model_placement: Literal["inprocess", "separate"]
    model_copies: int | None = Field(description="per API worker, with the model in process")
    max_batch_size: int
    max_latency_ms: int
    jpeg_decode: str | None = Field(
        None, description="where the model service decodes plain JPEGs (cuda, cpu); null: the API workers decode"
    )


class ModelInfo(BaseModel):
    name: str
    version: str
    runtime: str
    conditions: list[str]
    severities: list[str]
    skin_types: list[str] = Field(description="the skin-type head's labels; empty: the model has none")
    regions: bool = Field(description="whether the model has class activation maps (regions, /api/v1/ml/explain)")
    face_check: str = Field(description="SKINSERVE_FACE_CHECK: off, warn or enforce")
    face_crop_margin: float | None = Field(description="the margin around the face the model is shown; null: no crop")
    thresholds: dict[str, float]
    input_size: int
    preprocessing: dict
    metrics: dict
    batching: Batching


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong, in words a person can act on")
    code: str = Field(description="stable, machine-readable: too_large, unsupported_type, undecodable, ...")
    request_id: str | None = None


__all__ = ["Analysis", "BatchAnalysis", "ErrorBody", "ModelInfo", "ShineAnswer"]
