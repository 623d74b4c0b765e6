"""Locust scenarios against the skinserve service: real images to /analyze and /analyze_batch, reads of /model.

    python -m locust -f loadtests/locustfile.py --host http://127.0.0.1:3000 [--images DIR] [AnalyzeUser ...]

Users: `AnalyzeUser` (weight 10, one image per request), `BatchAnalyzeUser` (weight 2, `--batch-images` images per
request) and `ModelInfoUser` (weight 1); tasks are tagged analyze, batch and model. Without `--images` the corpus
is drawn once per process (loadtests/images.py: synthetic faces as JPEG and PNG at 256, 512 and 1024 px). With
SKINSERVE_LOADTEST_SHAPE=step a step ramp (`StepLoadShape`) drives the users instead of -u/-r alone. The token
comes from SKINSERVE_LOADTEST_TOKEN (an environment variable, so it stays out of `ps`). `PlainPeerUser` sends the
same images to the plain BentoML peer (benchmarks/serving.py), whose API takes them in an `images` field.
Run it through `skinserve loadtest` / `python -m loadtests`, which adds the reports; never import it elsewhere:
Locust patches the standard library through gevent when imported.
"""

from __future__ import annotations

import csv
import json
import os
import random
import tempfile
from pathlib import Path

from locust import FastHttpUser, LoadTestShape, events, tag, task
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV
from urllib3.filepost import encode_multipart_formdata

from loadtests.images import CorpusImage, load_corpus, write_corpus

IMAGES_ENV = "SKINSERVE_LOADTEST_IMAGES"
TOKEN_ENV = "SKINSERVE_LOADTEST_TOKEN"
SHAPE_ENV = "SKINSERVE_LOADTEST_SHAPE"
TIMINGS_ENV = "SKINSERVE_LOADTEST_TIMINGS"
TIMING_KEYS = ("decode_ms", "inference_ms", "total_ms", "batch_size")

MAX_TIMINGS = 100_000  # a uniform sample beyond this: an hour at 3,000 requests/s would hold ~1 GB of lists

# Per process (Locust's model): the parsed options for events not handed the environment, the request bodies,
# and the service's own `timings` of answered analyses (with how many were seen, for the sample).
_options: dict[str, object] = {}
_single_bodies: list[tuple[bytes, str]] = []
_batch_bodies: list[tuple[bytes, str, int]] = []
_peer_bodies: list[tuple[bytes, str]] = []
_timings: list[list[float]] = []
_seen = [0]


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    group = parser.add_argument_group("skinserve")
    group.add_argument("--images", default=os.environ.get(IMAGES_ENV, ""), help="Folder of JPEG/PNG/WebP files.")
    group.add_argument("--batch-images", type=int, default=4, help="Images per /analyze_batch request.")
    group.add_argument("--think-time", type=float, default=0.0, help="Seconds each user waits between requests.")
    group.add_argument("--steps", type=int, default=4, help="Steps of the step shape, up to -u users in -t.")
    group.add_argument("--timings-out", default=os.environ.get(TIMINGS_ENV, ""), help="JSON of answer timings.")


@events.init.add_listener
def _prepare(environment, **_kwargs) -> None:
    options = environment.parsed_options
    _options["parsed"] = options
    if options is None or isinstance(environment.runner, MasterRunner):  # a master sends no requests
        return
    folder = options.images
    if not folder:
        folder = tempfile.mkdtemp(prefix="skinserve-loadtest-")
        write_corpus(Path(folder))
    corpus = load_corpus(Path(folder))
    # Multipart bodies are encoded once here, not per request: the load generator shares the cores it measures.
    _single_bodies[:] = [encode_multipart_formdata({"image": _field(image)}) for image in corpus]
    _peer_bodies[:] = [encode_multipart_formdata({"images": _field(image)}) for image in corpus]
    count = max(1, min(options.batch_images, len(corpus)))
    rotations = [[corpus[(start + i) % len(corpus)] for i in range(count)] for start in range(len(corpus))]
    _batch_bodies[:] = [
        (*encode_multipart_formdata([("images", _field(image)) for image in chosen]), count) for chosen in rotations
    ]


def _field(image: CorpusImage) -> tuple[str, bytes, str]:
    return image.name, image.data, image.content_type


def _keep_timings(rows: list[list[float]]) -> None:
    """Reservoir sampling (Algorithm R): every answer has the same chance to be among the MAX_TIMINGS kept."""
    for row in rows:
        _seen[0] += 1
        if len(_timings) < MAX_TIMINGS:
            _timings.append(row)
        elif (slot := random.randrange(_seen[0])) < MAX_TIMINGS:
            _timings[slot] = row


@events.spawning_complete.add_listener
def _reset_timings(user_count: int, **_kwargs) -> None:
    options = _options.get("parsed")
    if options is not None and options.reset_stats:  # as Locust resets its own stats when the ramp ends
        _timings.clear()
        _seen[0] = 0


@events.report_to_master.add_listener
def _send_timings(client_id: str, data: dict) -> None:
    data["skinserve_timings"] = _timings[:]
    _timings.clear()
    _seen[0] = 0


@events.worker_report.add_listener
def _receive_timings(client_id: str, data: dict) -> None:
    _keep_timings(data.get("skinserve_timings", []))


@events.quitting.add_listener
def _write_final_reports(environment, **_kwargs) -> None:
    options = environment.parsed_options
    if options is None or isinstance(environment.runner, WorkerRunner):
        return
    if options.csv_prefix:
        # Locust rewrites _stats.csv once a second and not at exit, so the file misses the last second's requests
        # that its HTML report and printed summary count: write it once more, with its own writer, from the final
        # stats (the users have stopped when `quitting` fires).
        with open(f"{options.csv_prefix}_stats.csv", "w", newline="") as handle:
            StatsCSV(environment, PERCENTILES_TO_REPORT).requests_csv(csv.writer(handle))
    if options.timings_out:
        Path(options.timings_out).write_text(json.dumps({"keys": TIMING_KEYS, "rows": _timings}))


def _refusal(response) -> str:
    """The failure as Locust will group it: status and the service's `error`, without the per-request id."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    return f"HTTP {response.status_code}: {error or (response.text or '')[:200]}"


class SkinServeUser(FastHttpUser):
    abstract = True
    network_timeout = 120.0
    connection_timeout = 30.0

    def wait_time(self) -> float:
        return self.environment.parsed_options.think_time if self.environment.parsed_options else 0.0

    def on_start(self) -> None:
        token = os.environ.get(TOKEN_ENV)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def post_analysis(self, path: str, body: bytes, content_type: str, images: int) -> None:
        headers = self.headers | {"Content-Type": content_type}
        with self.client.post(path, data=body, headers=headers, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(_refusal(response))
                return
            try:
                answer = response.json()
            except ValueError:
                response.failure(f"not JSON: {(response.text or '')[:200]}")
                return
            results = answer.get("results", [answer])
            if len(results) != images or "conditions" not in results[0]:
                response.failure(f"expected {images} analyses, got: {response.text[:200]}")
                return
            first = results[0]
            measured = first.get("timings", {}) | {"batch_size": first.get("batch_size", 0)}
            _keep_timings([[float(measured.get(key, 0.0)) for key in TIMING_KEYS]])


class AnalyzeUser(SkinServeUser):
    """One image per request, the product's main call."""

    weight = 10

    @tag("analyze")
    @task
    def analyze(self) -> None:
        body, content_type = random.choice(_single_bodies)
        self.post_analysis("/analyze", body, content_type, images=1)


class BatchAnalyzeUser(SkinServeUser):
    """Several images per request, as a client that uploads a photo series."""

    weight = 2

    @tag("batch")
    @task
    def analyze_batch(self) -> None:
        body, content_type, count = random.choice(_batch_bodies)
        self.post_analysis("/analyze_batch", body, content_type, images=count)


class ModelInfoUser(SkinServeUser):
    """A client that checks which model answers before it sends photos."""

    weight = 1

    def wait_time(self) -> float:
        # At least a second: with no wait, one such user would send more requests than all the others together.
        return max(1.0, super().wait_time())

    @tag("model")
    @task
    def model_info(self) -> None:
        with self.client.get("/model", headers=self.headers, catch_response=True) as response:
            if response.status_code != 200 or b'"version"' not in (response.content or b""):
                response.failure(_refusal(response))


class PlainPeerUser(FastHttpUser):
    """The plain BentoML peer's client (`../shared/baselines/plain_bento`): one image per request in its `images`
    field, answered with a JSON list of one result. The serving benchmark's yardstick, run only when named (the
    runner always names the classes of a scenario: `plain`)."""

    network_timeout = 120.0
    connection_timeout = 30.0

    @tag("plain")
    @task
    def analyze(self) -> None:
        body, content_type = random.choice(_peer_bodies)
        headers = {"Content-Type": content_type}
        with self.client.post("/analyze", data=body, headers=headers, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(_refusal(response))
                return
            try:
                answer = response.json()
            except ValueError:
                answer = None
            if not isinstance(answer, list) or len(answer) != 1:
                response.failure(f"expected a list of one result, got: {(response.text or '')[:200]}")


class StepLoadShape(LoadTestShape):
    """A step ramp: `--steps` equal steps up to -u users, each held for an equal share of -t, spawned at -r/s."""

    abstract = os.environ.get(SHAPE_ENV, "") != "step"  # Locust runs any concrete shape it finds in the file
    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options
        run_time = options.run_time or 60
        steps = max(1, options.steps)
        elapsed = self.get_run_time()
        if elapsed >= run_time:
            return None
        step = min(steps, int(elapsed // (run_time / steps)) + 1)
        users = max(1, round((options.num_users or steps) * step / steps))
        return users, options.spawn_rate or users
