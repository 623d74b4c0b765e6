"""The service's response documents (pydantic): they are the JSON schema the OpenAPI spec publishes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

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
    thresholds: dict[str, float]
    input_size: int
    preprocessing: dict
    metrics: dict
    batching: Batching


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong, in words a person can act on")
    code: str = Field(description="stable, machine-readable: too_large, unsupported_type, undecodable, ...")
    request_id: str | None = None
