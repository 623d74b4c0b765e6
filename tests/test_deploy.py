"""The Kubernetes manifests, offline: each kustomization rendered by kubectl and validated by kubernetes-validate
--strict (deploy/check.sh), a misspelled field or kind failing it, and what the schemas cannot see: the HPA's metric
against the prometheus-adapter rule, the ServiceMonitor against the Service, the settings against the code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from skinserve.db.partitions import PartitionPolicy
from skinserve.serve.settings import ServiceSettings

from .conftest import unavailable

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
CHECK = REPO / "deploy" / "check.sh"
OVERLAYS = ("cpu", "gpu")


def check(*targets: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHON": sys.executable}
    return subprocess.run(["bash", str(CHECK), *targets], capture_output=True, text=True, timeout=300, env=env)


def render(target: Path) -> list[dict]:
    if shutil.which("kubectl") is None:
        unavailable("kubectl is not on PATH (it carries kustomize)")
    done = subprocess.run(["kubectl", "kustomize", str(target)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def one(objects: list[dict], kind: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def pod_specs(objects: list[dict]) -> dict[str, dict]:
    specs = {}
    for o in objects:
        if o["kind"] in ("Deployment", "Job"):
            specs[f"{o['kind']}/{o['metadata']['name']}"] = o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            specs[f"CronJob/{o['metadata']['name']}"] = o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, list[dict]]:
    return request.param, render(K8S / "overlays" / request.param)


def test_every_kustomization_renders_and_validates_strictly():
    if shutil.which("kubectl") is None:
        unavailable("kubectl is not on PATH (it carries kustomize)")
    done = check()
    print(done.stdout)  # the CI lines: one per kustomization
    assert done.returncode == 0, done.stdout + done.stderr
    for target in ("overlays/cpu", "overlays/gpu", "prometheus-adapter"):
        assert f"ok {target}: " in done.stdout


def overlay_on_cpu(tmp_path: Path, patch: str) -> Path:
    """A kustomization on top of the cpu overlay with `patch` applied, as a user's own overlay would be."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(K8S / "overlays" / "cpu", tmp_path)],
                "patches": [{"patch": patch}],
            }
        )
    )
    return tmp_path


def test_a_misspelled_field_fails_the_check(tmp_path):
    patch = yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "skinserve"},
            "spec": {"template": {"spec": {"terminationGracePeriodSecond": 90}}},
        }
    )
    done = check(str(overlay_on_cpu(tmp_path, patch)))
    assert done.returncode == 1, done.stdout
    assert "'terminationGracePeriodSecond' was unexpected" in done.stdout
    assert "FAILED" in done.stdout


def test_a_misspelled_kind_fails_the_check(tmp_path):
    (tmp_path / "pdb.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBugdet",
                "metadata": {"name": "typo"},
                "spec": {"maxUnavailable": 1},
            }
        )
    )
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({"resources": ["pdb.yaml"]}))
    done = check(str(tmp_path))
    assert done.returncode == 1, done.stdout
    assert "not a known CRD" in done.stdout and "PodDisruptionBugdet" in done.stdout


# The ServiceMonitor fields this project uses, typed as in prometheus-operator's CRD (monitoring.coreos.com/v1):
# kubernetes-validate has no schema for a CRD, so this is the strict check of the one CRD object.
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
                            "scrapeTimeout": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
                        },
                    },
                },
            },
        },
    },
}


def test_the_service_monitor_scrapes_the_services_metrics_port(overlay):
    _, objects = overlay
    monitor, service = one(objects, "ServiceMonitor"), one(objects, "Service")
    jsonschema.validate(monitor, SERVICE_MONITOR)
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    with pytest.raises(jsonschema.ValidationError, match="'scrape_timeout' was unexpected"):
        jsonschema.validate(
            {**monitor, "spec": {**monitor["spec"], "endpoints": [{"scrape_timeout": "5s"}]}}, SERVICE_MONITOR
        )


def test_the_hpa_reads_the_queue_gauge_the_adapter_rule_serves_with_cpu_as_fallback(overlay):
    _, objects = overlay
    hpa, deployment = one(objects, "HorizontalPodAutoscaler"), one(objects, "Deployment")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "skinserve"}
    assert deployment["metadata"]["name"] == "skinserve"
    by_type = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert set(by_type) == {"Pods", "Resource"}
    assert by_type["Resource"]["resource"]["name"] == "cpu"
    metric = by_type["Pods"]["pods"]["metric"]["name"]

    (config_map,) = render(K8S / "prometheus-adapter")
    (rule,) = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    assert rule["name"]["as"] == metric == "skinserve_queue_images"
    assert rule["seriesQuery"].startswith("skinserve_queue_images{")
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    assert "<<.Series>>{<<.LabelMatchers>>}" in rule["metricsQuery"] and "by (<<.GroupBy>>)" in rule["metricsQuery"]
    assert hpa["spec"]["minReplicas"] >= 2  # with the PodDisruptionBudget's maxUnavailable 1, one pod always serves
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def config(objects: list[dict]) -> dict[str, str]:
    return one(objects, "ConfigMap")["data"]


def test_termination_outlasts_a_request_and_the_logs_last_flush(overlay):
    _, objects = overlay
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    timeout_s = ServiceSettings.from_env(config(objects)).timeout_s
    writer_stop_s = 10  # service.py: self.writer.stop(timeout_s=10) in the shutdown hook
    assert pod["terminationGracePeriodSeconds"] > pre_stop + timeout_s + writer_stop_s


def test_the_settings_are_ones_the_service_reads(overlay):
    name, objects = overlay
    data = config(objects)
    settings = ServiceSettings.from_env(data)  # a bad value would raise here, naming its variable
    assert settings.timeout_s == int(data["SKINSERVE_TIMEOUT_S"])
    assert str(settings.spool_dir) == data["SKINSERVE_SPOOL_DIR"]
    assert settings.model_in_process is (name == "cpu")
    assert (settings.gpus, settings.model_placement) == ((1, "separate") if name == "gpu" else (0, "auto"))
    assert PartitionPolicy.from_env(data).retention_days == int(data["SKINSERVE_LOG_RETENTION_DAYS"])
    read = {f"SKINSERVE_{name.upper()}" for name in ServiceSettings.model_fields}
    read |= {f"SKINSERVE_LOG_{name.upper()}" for name in PartitionPolicy.model_fields}
    for key in data:
        assert key in read or key.startswith("BENTOML_"), f"{key} is read by no settings class"


def test_pods_run_locked_down_with_the_secrets_from_the_environment(overlay):
    name, objects = overlay
    (mount_root,) = {m["mountPath"] for m in volume_mounts(objects) if m["name"] == "spool"}
    assert config(objects)["SKINSERVE_SPOOL_DIR"].startswith(mount_root)
    assert config(objects)["BENTOML_HOME"] in {m["mountPath"] for m in volume_mounts(objects)}
    for where, pod in pod_specs(objects).items():
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["enableServiceLinks"] is False and pod["automountServiceAccountToken"] is False, where
        for container in pod.get("initContainers", []) + pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"], where
            secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
            assert secrets["SKINSERVE_DATABASE_URL"] == {"name": "skinserve-secrets", "key": "database-url"}, where
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}, where
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith("skinserve-gpu:0.1.0" if name == "gpu" else "skinserve:0.1.0")
    gpus = container["resources"]["limits"].get("nvidia.com/gpu")
    assert gpus == (1 if name == "gpu" else None)
    probes = {p: container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes == {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/livez"}


def volume_mounts(objects: list[dict]) -> list[dict]:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container["volumeMounts"]


def test_the_db_upgrade_job_migrates_then_makes_partitions(overlay):
    _, objects = overlay
    job = one(objects, "Job")["spec"]["template"]["spec"]
    (upgrade,) = job["initContainers"]
    (partitions,) = job["containers"]
    assert upgrade["args"] == ["python", "-m", "skinserve", "db", "upgrade"]
    assert partitions["args"] == ["python", "-m", "skinserve", "db", "partitions"]
    image = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert upgrade["image"] == partitions["image"] == image  # the migrations the new pods expect
    cron = one(objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert cron["args"] == partitions["args"] and cron["image"] == image


PRE_ROLLOUT = {"config", "db-upgrade"}  # README: kubectl apply -k ... -l 'app.kubernetes.io/component in (...)'


def test_the_pre_rollout_selector_picks_the_config_and_the_upgrade_job_only(overlay):
    _, objects = overlay
    picked = {
        o["kind"] for o in objects if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") in PRE_ROLLOUT
    }
    assert picked == {"ConfigMap", "Job"}
