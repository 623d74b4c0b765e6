"""The service's response documents (pydantic): they are the JSON schema the OpenAPI spec publishes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

SeverityLabel = Literal["none", "mild", "moderate", "severe"]


class Severity(BaseModel):
    label: SeverityLabel = Field(description="most likely present level when the condition is present, else none")
    probabilities: dict[str, float] = Field(description="softmax over none, mild, moderate, severe")


class ConditionScore(BaseModel):
    probability: float = Field(ge=0, le=1, description="sigmoid of the condition logit")
    present: bool = Field(description="probability >= the condition's tuned threshold")
    severity: Severity


class ModelRef(BaseModel):
    name: str
    version: str


class Timings(BaseModel):
    decode_ms: float = Field(description="upload parsing, decode and preprocessing")
    inference_ms: float = Field(description="queueing in the batch dispatcher plus the model call")
    total_ms: float


class ImageInfo(BaseModel):
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
    image: ImageInfo
    timings: Timings


class BatchAnalysis(BaseModel):
    results: list[Analysis]


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
    batching: dict


class ErrorBody(BaseModel):
    error: str
    request_id: str | None = None
