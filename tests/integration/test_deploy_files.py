"""deploy/ checked with real tools and against the code it deploys.

Tools (installed outside the repo by .ci/install-tools.sh, which the session fixture runs when they are missing):
promtool (config, rules, rule unit tests, and the dashboard's PromQL), kubernetes-validate (strict, bundled
Kubernetes schemas, offline) on `kubectl kustomize` output, check-jsonschema with the bundled compose-spec
schema, BuildKit's Dockerfile parser, and `docker compose config` where the compose plugin exists.
CRDs (Strimzi, KEDA, Prometheus Operator) have no offline schema: they are checked structurally against
rfr.core.topics, rfr.core.settings and the services' consumer groups.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from rfr.core.metrics import StageMetrics, build_info
from rfr.core.settings import IngestSettings, KafkaSettings, MetricsSettings, ReviewSettings, Settings
from rfr.core.topics import ALL_TOPICS, EMBEDDINGS, FACES, FRAMES, MATCHES, SUBMISSIONS, topic_specs

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
SERVICES = ("ingest", "detect", "embed", "match", "review", "cluster")
SCALED = ("ingest", "detect", "embed", "match")  # KEDA scales these on lag; review runs one replica
INPUT_TOPIC = {"ingest": SUBMISSIONS, "detect": FRAMES, "embed": FACES, "match": EMBEDDINGS, "review": MATCHES}
METRICS_PORT = {s: int(getattr(MetricsSettings(), f"{s}_port")) for s in SERVICES}
HTTP_PORT = {"ingest": IngestSettings().http_port, "review": ReviewSettings().http_port}  # services with an API
# Secrets the operator creates by hand (deploy/README.md): name -> keys the manifests read from it.
K8S_SECRETS = {"rfr-secrets": set(), "rfr-ingest": {"database-url"}, "rfr-review": {"database-url", "review-secret"}}
CRD_KINDS = {"Kafka", "KafkaNodePool", "KafkaTopic", "ScaledObject", "PodMonitor", "PrometheusRule"}
K8S_VERSIONS = ("1.30.0", "1.34.0")
# Agreed names of service metrics whose module is not written yet (used only while services/<svc>/metrics.py
# is missing; once it exists, the names come from the code): (name, type).
PLANNED_METRICS = {
    "detect": [("rfr_detect_frames", "counter"), ("rfr_detect_faces_found", "counter"),
               ("rfr_detect_faces_rejected", "counter"), ("rfr_detect_seconds", "histogram"),
               ("rfr_detect_faces_per_frame", "histogram")],
    "review": [("rfr_review_queue_cases", "gauge"), ("rfr_review_oldest_pending_age_seconds", "gauge"),
               ("rfr_review_decisions", "counter"), ("rfr_review_disagreements", "counter"),
               ("rfr_review_purged", "counter"), ("rfr_review_cases_created", "counter"),
               ("rfr_review_searches_recorded", "counter"), ("rfr_review_outbox_pending", "gauge")],
}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "info": ("_info",), "summary": ("", "_sum", "_count", "_created")}


K8s = dict[tuple[str, str], dict[str, Any]]  # rendered manifests by (kind, name)


@dataclass(frozen=True)
class Tools:
    promtool: Path
    python: Path  # the tools venv: kubernetes-validate, check-jsonschema, dockerfile, PyYAML
    bin: Path

    def run(self, *args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(a) for a in args], input=stdin, capture_output=True, text=True, timeout=300,
                              check=False)

    def yaml_docs(self, text: str) -> list[Any]:
        code = "import sys, json, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)"
        proc = self.run(self.python, "-c", code, stdin=text)
        assert proc.returncode == 0, proc.stderr
        docs: list[Any] = json.loads(proc.stdout)
        return docs


@pytest.fixture(scope="session")
def tools() -> Tools:
    base = Path(os.environ.get("RFR_TOOLS_DIR", Path.home() / ".cache" / "rfr-tools"))
    found = Tools(base / "bin" / "promtool", base / "venv" / "bin" / "python", base / "venv" / "bin")
    ready = found.promtool.exists() and (base / "venv" / ".installed").exists()
    if not ready and not os.environ.get("RFR_NO_TOOL_INSTALL"):
        proc = subprocess.run(["bash", str(ROOT / ".ci" / "install-tools.sh")], capture_output=True, text=True,
                              timeout=900, check=False)
        ready = proc.returncode == 0
        if not ready:
            pytest.skip(f"validators could not be installed by .ci/install-tools.sh: {proc.stderr[-800:]}")
    if not ready:
        pytest.skip(f"validators missing in {base} and RFR_NO_TOOL_INSTALL is set")
    return found


def load(tools: Tools, path: Path) -> Any:
    docs = tools.yaml_docs(path.read_text(encoding="utf-8"))
    return docs[0] if len(docs) == 1 else docs


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


# --- metric names: from the code that exports them ---------------------------------------------------------
def _family_samples(registry: CollectorRegistry) -> set[str]:
    return {fam.name + sfx for fam in registry.collect() for sfx in SUFFIXES[fam.type]}


def _service_metric_classes(svc: str) -> list[Any]:
    try:
        module = importlib.import_module(f"services.{svc}.metrics")
    except ModuleNotFoundError as exc:
        if exc.name in (f"services.{svc}.metrics", f"services.{svc}"):
            return []
        raise
    return [obj for name, obj in vars(module).items()
            if name.endswith("Metrics") and getattr(obj, "__module__", "") == module.__name__
            and hasattr(obj, "create")]


@pytest.fixture(scope="session")
def exported_metrics() -> dict[str, Any]:
    """Every sample name the services export, and the metric objects (for bucket checks)."""
    registry = CollectorRegistry()
    for stage in (*SERVICES, "ingest_status"):
        StageMetrics.create(stage, registry=registry)
    build_info("test", registry=registry)
    objects: dict[str, Any] = {}
    names = set()
    for svc in SERVICES:
        classes = _service_metric_classes(svc)
        for cls in classes:
            objects[svc] = cls.create(registry=registry)
        if not classes:
            names |= {n + sfx for n, kind in PLANNED_METRICS.get(svc, []) for sfx in SUFFIXES[kind]}
    return {"names": names | _family_samples(registry), "objects": objects}


def promql_names(expr: str) -> set[str]:
    """Metric and recording-rule names an expression reads (strings, matchers, ranges and label lists removed)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\[[^\]]*\]|\{[^}]*\}", "", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", s)
    return {t for t in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", s) if t.startswith("rfr") or ":" in t or t == "up"}


@pytest.fixture(scope="session")
def rules(tools: Tools) -> dict[str, Any]:
    doc: dict[str, Any] = load(tools, PROM / "rules.yml")
    return doc


def all_rules(rules: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in rules["groups"] for r in g["rules"]]


def dashboard_targets() -> Iterator[tuple[str, str]]:
    dash = json.loads((DEPLOY / "grafana" / "rfr-dashboard.json").read_text(encoding="utf-8"))
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


# --- Prometheus ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-local.yml", "prometheus-k8s.yml"])
def test_promtool_check_config(tools: Tools, config: str) -> None:
    out = ok(tools.run(tools.promtool, "check", "config", PROM / config))  # also parses the rule files it names
    assert "SUCCESS" in out


def test_promtool_check_rules_and_prometheusrule_in_step(tools: Tools, rules: dict[str, Any], tmp_path: Path) -> None:
    assert "SUCCESS" in ok(tools.run(tools.promtool, "check", "rules", PROM / "rules.yml"))
    ok(tools.run(sys.executable, DEPLOY / "render_prometheusrule.py", "--check"))
    crd = load(tools, DEPLOY / "k8s" / "base" / "prometheusrule.yaml")
    assert crd["kind"] == "PrometheusRule" and crd["spec"]["groups"] == rules["groups"]
    (tmp_path / "crd-rules.json").write_text(json.dumps({"groups": crd["spec"]["groups"]}))
    ok(tools.run(tools.promtool, "check", "rules", tmp_path / "crd-rules.json"))


def test_promtool_rejects_a_broken_rule(tools: Tools, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"groups": [{"name": "x", "rules": [{"alert": "A", "expr": "sum(rate(x[5m]"}]}]}))
    assert tools.run(tools.promtool, "check", "rules", bad).returncode != 0


def test_promtool_rule_unit_tests_cover_every_alert(tools: Tools, rules: dict[str, Any]) -> None:
    ok(tools.run(tools.promtool, "test", "rules", PROM / "rules_test.yml"))
    suite = load(tools, PROM / "rules_test.yml")
    firing = {t["alertname"] for case in suite["tests"] for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
    alerts = {r["alert"] for r in all_rules(rules) if "alert" in r}
    assert {"RfrServiceDown", "RfrDeadLettersRising"} <= firing
    assert alerts - firing == set(), "alerts without a unit test that makes them fire"


def test_rule_unit_tests_evaluate_groups_in_a_fixed_order(tools: Tools, rules: dict[str, Any]) -> None:
    """promtool evaluates groups in Go map order (random) unless group_eval_order places each one; a rule that
    reads a recorded series then sees this step's value or the last one's by chance (issue 12: "15m 0s" / "14m 0s").
    """
    order = load(tools, PROM / "rules_test.yml").get("group_eval_order", [])
    groups = [g["name"] for g in rules["groups"]]
    assert sorted(order) == sorted(groups) and len(set(order)) == len(order), "group_eval_order: every group once"
    made_at: dict[str, list[tuple[int, int]]] = {}  # recorded name -> (group position, rule position) of each rule
    for group in rules["groups"]:
        for i, rule in enumerate(group["rules"]):
            if "record" in rule:
                made_at.setdefault(rule["record"], []).append((order.index(group["name"]), i))
    for group in rules["groups"]:
        for i, rule in enumerate(group["rules"]):
            for name in promql_names(rule["expr"]) & made_at.keys():
                late = [at for at in made_at[name] if at >= (order.index(group["name"]), i)]
                assert not late, f"{rule.get('alert') or rule.get('record')} reads {name}, recorded after it"


def _jobs_named(expr: str) -> list[str]:
    """The job matchers of an expression: exact names and regexes (anchored, as PromQL anchors them)."""
    return re.findall(r'job=~?"([^"]+)"', expr)


def test_service_alerts_and_stage_rules_cover_every_service(rules: dict[str, Any]) -> None:
    alerts = {r["alert"]: r["expr"] for r in all_rules(rules) if "alert" in r}
    for name in ("RfrServiceDown", "RfrServiceMissing", "RfrInstanceDown"):
        matchers = _jobs_named(alerts[name])
        for svc in SERVICES:
            assert any(re.fullmatch(m, f"rfr-{svc}") for m in matchers), f"{name} leaves out rfr-{svc}"
    per_stage: dict[str, set[str]] = {}
    for rule in all_rules(rules):
        if "record" in rule and "stage" in rule.get("labels", {}):
            per_stage.setdefault(rule["labels"]["stage"], set()).add(rule["record"])
    common = per_stage["ingest"] - {"rfr_stage:upstream_produced:rate5m"}
    assert len(common) >= 9
    for svc in SERVICES:
        assert common <= per_stage[svc], f"stage {svc} lacks {common - per_stage[svc]}"
        if svc != "ingest":  # RfrStageStalled needs what the stage's upstream writes to its input topic
            assert "rfr_stage:upstream_produced:rate5m" in per_stage[svc], svc


def test_review_alerts_read_the_review_gauges(rules: dict[str, Any]) -> None:
    alerts = {r["alert"]: r for r in all_rules(rules) if "alert" in r}
    recorded = {r["record"]: r["expr"] for r in all_rules(rules) if "record" in r}
    stale, stuck = alerts["RfrReviewQueueStale"], alerts["RfrReviewOutboxStuck"]
    assert stale["for"] == "15m" and "> 86400" in stale["expr"]  # 24 h, as deploy/README.md says
    assert stuck["for"] == "15m" and "> 0" in stuck["expr"]
    for alert, gauge in ((stale, "rfr_review_oldest_pending_age_seconds"), (stuck, "rfr_review_outbox_pending")):
        (name,) = promql_names(alert["expr"])
        assert recorded[name].startswith("max") and gauge in recorded[name]  # replicas report one figure: max


def test_readme_documents_every_alert(rules: dict[str, Any]) -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    table = set(re.findall(r"^\| (Rfr\w+) \|", readme, re.M))
    assert table == {r["alert"] for r in all_rules(rules) if "alert" in r}


def test_rules_read_only_exported_metrics(rules: dict[str, Any], exported_metrics: dict[str, Any]) -> None:
    recorded = {r["record"] for r in all_rules(rules) if "record" in r}
    for rule in all_rules(rules):
        names = promql_names(rule["expr"])
        assert names, rule
        unknown = names - exported_metrics["names"] - recorded - {"up"}
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: {unknown}"


def test_slo_histogram_has_a_10s_bucket(exported_metrics: dict[str, Any]) -> None:
    match = exported_metrics["objects"].get("match")
    if match is None:
        pytest.skip("services/match/metrics.py not present")
    assert 10.0 in match.end_to_end_seconds._upper_bounds  # the SLO rules read le="10.0"


# --- Grafana ---------------------------------------------------------------------------------------------
def test_dashboard_queries_name_exported_metrics(rules: dict[str, Any], exported_metrics: dict[str, Any]) -> None:
    recorded = {r["record"] for r in all_rules(rules) if "record" in r}
    targets = list(dashboard_targets())
    assert len(targets) >= 20
    for title, expr in targets:
        names = promql_names(expr)
        assert names, f"{title}: no metric in {expr}"
        unknown = names - exported_metrics["names"] - recorded - {"up"}
        assert not unknown, f"panel {title!r} reads unknown metrics {unknown}"


def test_dashboard_promql_parses(tools: Tools, tmp_path: Path) -> None:
    rules = [{"record": f"dashboard:panel_{i}", "expr": expr.replace("$__rate_interval", "5m")}
             for i, (_, expr) in enumerate(dashboard_targets())]
    path = tmp_path / "dashboard-rules.json"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    ok(tools.run(tools.promtool, "check", "rules", path))


def test_dashboard_covers_the_pipeline_and_is_provisioned(tools: Tools) -> None:
    dash = json.loads((DEPLOY / "grafana" / "rfr-dashboard.json").read_text(encoding="utf-8"))
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource"}
    queries = " ".join(expr for _, expr in dashboard_targets())
    for needle in ("messages_consumed", "end_to_end_seconds_bucket", "histogram_quantile(0.5,",
                   "histogram_quantile(0.95,", "histogram_quantile(0.99,", "deadletters", "rejections_total",
                   "faces_rejected_total", "gallery_faces", "batch_messages_bucket", "batch_faces", "inflight",
                   "rfr_review:queue_cases", "rfr_review:oldest_pending_age_seconds", "rfr_review_decisions_total",
                   "rfr_review_steps_total",
                   "rfr_review_disagreements_total", "rfr_review_purged_total", "rfr_review:outbox_pending"):
        assert needle in queries, needle
    assert "Review" in {p["title"] for p in dash["panels"] if p["type"] == "row"}
    up = next(expr for _, expr in dashboard_targets() if expr.startswith("sum by (job) (up{"))
    assert all(any(re.fullmatch(m, f"rfr-{s}") for m in _jobs_named(up)) for s in SERVICES), up
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    source = load(tools, DEPLOY / "grafana" / "provisioning" / "datasources" / "rfr.yaml")["datasources"][0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    provider = load(tools, DEPLOY / "grafana" / "provisioning" / "dashboards" / "rfr.yaml")["providers"][0]
    compose = load(tools, DEPLOY / "compose" / "compose.yaml")
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(m.endswith(f"{provider['options']['path']}/rfr-dashboard.json:ro") for m in mounts)


def test_no_query_reads_the_outcome_of_a_step(rules: dict[str, Any]) -> None:
    """Final decisions are counted by outcome only, steps by stage only: a first decision's outcome never shows
    before its blind verification, so no panel or rule asks for a decision's stage or a step's outcome."""
    exprs = [expr for _, expr in dashboard_targets()] + [r["expr"] for r in all_rules(rules)]
    for expr in exprs:
        for name, labels in re.findall(r"(rfr_review_decisions_total|rfr_review_steps_total)\s*(\{[^}]*\})?", expr):
            forbidden = "stage" if name == "rfr_review_decisions_total" else "outcome"
            assert forbidden not in labels, expr
        if "rfr_review_decisions_total" in expr:
            assert not re.search(r"by\s*\([^)]*stage", expr), expr
        if "rfr_review_steps_total" in expr:
            assert not re.search(r"by\s*\([^)]*outcome", expr), expr


# --- settings carried by env -----------------------------------------------------------------------------
def assert_valid_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The RFR_ variables name real settings (nested or top-level) and their values parse."""
    for key in [k for k in os.environ if k.startswith("RFR_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("RFR_"):
            top, _, nested = key[4:].lower().partition("__")
            assert top in Settings.model_fields, key
            group = Settings.model_fields[top].annotation
            assert not nested or nested in group.model_fields, key  # type: ignore[union-attr]
            monkeypatch.setenv(key, str(value))
    return Settings()


# --- Kubernetes ------------------------------------------------------------------------------------------
def kustomize(path: Path) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (for `kubectl kustomize`) is not installed")
    proc = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False)
    return ok(proc) and proc.stdout


@pytest.fixture(scope="session")
def k8s(tools: Tools) -> K8s:
    docs = tools.yaml_docs(kustomize(DEPLOY / "k8s"))
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


@pytest.mark.parametrize("target", ["k8s", "k8s/overlays/gpu-embed"])
def test_manifests_validate_against_kubernetes_schemas(tools: Tools, target: str) -> None:
    rendered = kustomize(DEPLOY / target)
    for version in K8S_VERSIONS:
        out = ok(tools.run(tools.bin / "kubernetes-validate", "--strict", "-k", version, "-", stdin=rendered))
        passed = re.findall(r"passed for resource (\S+)", out)
        no_schema = set(re.findall(r"Couldn't find schema for kind (\S+)", out))
        assert len(passed) >= 15 and {"deployment/rfr-embed", "job/rfr-models-fetch"} <= set(passed)
        assert no_schema == CRD_KINDS, "only the CRDs may lack a schema (checked structurally below)"


def test_kubernetes_validate_rejects_a_broken_manifest(tools: Tools) -> None:
    bad = ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: two\n  selector: {}\n"
           "  template: {spec: {containers: [{name: x, image: x, portz: []}]}}\n")
    proc = tools.run(tools.bin / "kubernetes-validate", "--strict", "-k", K8S_VERSIONS[0], "-", stdin=bad)
    assert proc.returncode != 0 and "ERROR" in proc.stdout


def test_deployments_run_the_services_safely(k8s: K8s) -> None:
    for svc in SERVICES:
        pod = k8s[("Deployment", f"rfr-{svc}")]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == ["python", "-m", f"services.{svc}"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == METRICS_PORT[svc]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] in ports, (svc, probe)
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert set(container["resources"]) == {"requests", "limits"}
        assert {"configMapRef": {"name": "rfr-config"}} in container["envFrom"]
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
        assert all(("PersistentVolumeClaim", c) in k8s for c in claims)
        assert ("Service", f"rfr-{svc}-metrics") in k8s
        if svc in HTTP_PORT:
            assert ports["http"] == HTTP_PORT[svc]
            assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
            (api,) = k8s[("Service", f"rfr-{svc}")]["spec"]["ports"]
            assert (api["port"], api["targetPort"]) == (HTTP_PORT[svc], "http")


def deployment_pod(k8s: K8s, svc: str) -> dict[str, Any]:
    pod: dict[str, Any] = k8s[("Deployment", f"rfr-{svc}")]["spec"]["template"]["spec"]
    return pod


def test_secrets_are_the_documented_hand_made_ones(k8s: K8s) -> None:
    """Secrets are created by hand (never committed); the manifests read only the ones deploy/README.md creates."""
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")  # one shell line each
    assert not [name for kind, name in k8s if kind == "Secret"], "no Secret may be committed"
    for svc in SERVICES:
        pod = deployment_pod(k8s, svc)
        (container,) = pod["containers"]
        refs = [(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
        refs += [(v["secret"]["secretName"], i["key"]) for v in pod["volumes"] if "secret" in v
                 for i in v["secret"]["items"]]
        refs += [(e["secretRef"]["name"], None) for e in container["envFrom"] if "secretRef" in e]
        for name, key in refs:
            assert name in K8S_SECRETS and (key is None or key in K8S_SECRETS[name]), (svc, name, key)
            assert f"create secret generic {name}" in readme, name
            if key is not None:  # the README's command makes that key
                assert re.search(rf"create secret generic {name}\b[^\n]*--from-(literal|file)={key}=", readme), key


def test_databases_and_the_review_secret_come_from_secrets(k8s: K8s, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = assert_valid_settings(k8s[("ConfigMap", "rfr-config")]["data"], monkeypatch)
    for svc in ("ingest", "review"):
        (container,) = deployment_pod(k8s, svc)["containers"]
        env = {e["name"]: e for e in container["env"]}
        url = env[f"RFR_{svc.upper()}__DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert url == {"name": f"rfr-{svc}", "key": "database-url"}  # not optional: no SQLite store per pod
        assert_valid_settings({n: "x" for n in env if n.startswith("RFR_")}, monkeypatch)  # real settings
    pod = deployment_pod(k8s, "review")
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    secret_file = Path(env["RFR_REVIEW__SECRET_FILE"])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (holder,) = [m for m in mounts.values() if secret_file.parent == Path(m["mountPath"])]
    secret = volumes[holder["name"]]["secret"]
    assert secret["secretName"] == "rfr-review" and holder["readOnly"] is True
    assert {"key": "review-secret", "path": secret_file.name} in secret["items"]
    blobs = [m for m in mounts.values() if Path(m["mountPath"]) == settings.blob_dir]
    assert blobs and not blobs[0].get("readOnly"), "review reads stills and photos and purges stills"
    assert volumes[blobs[0]["name"]]["persistentVolumeClaim"]["claimName"] == "rfr-blobs"


def test_toolbox_pod_enrols_into_the_shared_stores(tools: Tools, k8s: K8s, monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/k8s/tools: `rfr enrol` in the cluster keeps photos in rfr-blobs, where review shows them."""
    rendered = kustomize(DEPLOY / "k8s" / "tools")
    out = ok(tools.run(tools.bin / "kubernetes-validate", "--strict", "-k", K8S_VERSIONS[-1], "-", stdin=rendered))
    assert "passed for resource pod/rfr-toolbox" in out
    (pod,) = tools.yaml_docs(rendered)
    settings = assert_valid_settings(k8s[("ConfigMap", "rfr-config")]["data"], monkeypatch)
    (container,) = pod["spec"]["containers"]
    base_image = k8s[("Deployment", "rfr-review")]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert pod["metadata"]["namespace"] == "rfr" and container["image"] == base_image
    assert {"configMapRef": {"name": "rfr-config"}} in container["envFrom"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    mounts = {Path(m["mountPath"]): m for m in container["volumeMounts"]}
    assert claims[mounts[settings.blob_dir]["name"]] == "rfr-blobs" and not mounts[settings.blob_dir].get("readOnly")
    assert claims[mounts[settings.model_dir]["name"]] == "rfr-models"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_replicated_deployments_mount_only_shared_volumes(k8s: K8s) -> None:
    """A Deployment that may run several pods (KEDA max > 1) must not mount a ReadWriteOnce volume read-write."""
    for svc in SERVICES:
        scaled = k8s.get(("ScaledObject", f"rfr-{svc}"))
        deployment = k8s[("Deployment", f"rfr-{svc}")]["spec"]
        most = scaled["spec"]["maxReplicaCount"] if scaled else deployment["replicas"]
        if most == 1:
            assert deployment["strategy"]["type"] == "Recreate", svc  # never two pods during a rollout
            continue
        for vol in deployment["template"]["spec"]["volumes"]:
            if "persistentVolumeClaim" in vol:
                claim = k8s[("PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"])]
                assert "ReadWriteMany" in claim["spec"]["accessModes"], (svc, vol["name"])


def test_configmap_settings_are_real(k8s: K8s, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = assert_valid_settings(k8s[("ConfigMap", "rfr-config")]["data"], monkeypatch)
    assert settings.metrics.host == "0.0.0.0" and settings.ingest.http_host == "0.0.0.0"
    assert settings.review.http_host == "0.0.0.0"
    assert settings.review.cookie_secure is True  # the pages are served behind TLS
    assert settings.kafka.bootstrap_servers.startswith(f"{k8s_kafka(k8s)['metadata']['name']}-kafka-bootstrap.")
    job = k8s[("Job", "rfr-models-fetch")]["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == ["rfr", "models", "fetch"]
    assert str(settings.model_dir) in {m["mountPath"] for m in job["volumeMounts"]}


def k8s_kafka(k8s: K8s) -> dict[str, Any]:
    (kafka,) = [d for (kind, _), d in k8s.items() if kind == "Kafka"]
    return kafka


def test_strimzi_kraft_cluster_and_topics_match_the_code(k8s: K8s) -> None:
    kafka = k8s_kafka(k8s)
    assert kafka["metadata"]["annotations"] == {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"}
    pools = [d for (kind, _), d in k8s.items() if kind == "KafkaNodePool"]
    assert {r for p in pools for r in p["spec"]["roles"]} == {"controller", "broker"}
    assert all(p["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"] for p in pools)
    env = k8s[("ConfigMap", "rfr-config")]["data"]
    kafka_settings = KafkaSettings(partitions=int(env["RFR_KAFKA__PARTITIONS"]),
                                   replication_factor=int(env["RFR_KAFKA__REPLICATION_FACTOR"]))
    topics = {d["spec"]["topicName"]: d["spec"] for (kind, _), d in k8s.items() if kind == "KafkaTopic"}
    assert set(topics) == set(ALL_TOPICS)
    for spec in topic_specs(kafka_settings):
        got = topics[spec.name]
        assert (got["partitions"], got["replicas"], got["config"]) == (spec.partitions, spec.replication_factor,
                                                                       spec.config)
    assert sum(p["spec"]["replicas"] for p in pools) >= kafka_settings.replication_factor


def consumer_group(svc: str) -> str:
    """The group a service's source declares (GROUP = "..."), read without importing its models."""
    found = {m for f in (ROOT / "services" / svc).glob("*.py")
             for m in re.findall(r'^GROUP = "([^"]+)"', f.read_text(encoding="utf-8"), re.M)}
    return found.pop() if len(found) == 1 else f"rfr-{svc}"  # detect's main is not written yet: the agreed name


def test_keda_scales_each_consumer_group_on_its_lag(k8s: K8s) -> None:
    env = k8s[("ConfigMap", "rfr-config")]["data"]
    assert {name for kind, name in k8s if kind == "ScaledObject"} == {f"rfr-{s}" for s in SCALED}
    for svc in SCALED:
        scaled = k8s[("ScaledObject", f"rfr-{svc}")]["spec"]
        assert ("Deployment", scaled["scaleTargetRef"]["name"]) in k8s
        (trigger,) = scaled["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka" and meta["consumerGroup"] == consumer_group(svc)
        assert meta["topic"] == INPUT_TOPIC[svc] and meta["bootstrapServers"] == env["RFR_KAFKA__BOOTSTRAP_SERVERS"]
        assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= int(env["RFR_KAFKA__PARTITIONS"])


def test_podmonitor_gives_the_job_names_the_rules_use(k8s: K8s,
                                                       rules: dict[str, Any]) -> None:
    monitor = k8s[("PodMonitor", "rfr")]["spec"]
    (expr,) = monitor["selector"]["matchExpressions"]
    jobs = set(expr["values"])
    assert expr["key"] == monitor["jobLabel"] and jobs == {f"rfr-{s}" for s in SERVICES}
    for svc in SERVICES:
        labels = k8s[("Deployment", f"rfr-{svc}")]["spec"]["template"]["metadata"]["labels"]
        assert labels[monitor["jobLabel"]] == f"rfr-{svc}"
    down = next(r for r in all_rules(rules) if r.get("alert") == "RfrServiceDown")
    assert all(j.removeprefix("rfr-") in down["expr"] for j in jobs)


# --- compose ---------------------------------------------------------------------------------------------
COMPOSE = DEPLOY / "compose" / "compose.yaml"


def test_compose_file_matches_the_compose_spec_schema(tools: Tools, tmp_path: Path) -> None:
    ok(tools.run(tools.bin / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE))
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  x:\n    image: x\n    deploy: {replicas: [2]}\n    imagee: typo\n")
    assert tools.run(tools.bin / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", bad).returncode != 0


def test_docker_compose_config(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode:
        pytest.skip("the docker compose plugin is not installed (validated against the compose-spec schema instead)")
    env = {**os.environ, "GRAFANA_ADMIN_PASSWORD": "test", "POSTGRES_PASSWORD": "test"}
    ok(subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True,
                      env=env, timeout=60, check=False))


@pytest.fixture(scope="session")
def compose(tools: Tools) -> dict[str, Any]:
    doc: dict[str, Any] = load(tools, COMPOSE)
    return doc


def test_compose_services_scale_and_start_in_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "milvus", "etcd", "minio", "postgres", "prometheus", "grafana", "models", "topics",
            *SERVICES} <= set(services)
    for name, svc in services.items():
        assert "container_name" not in svc, name
        for dep, cond in svc.get("depends_on", {}).items():
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], (name, dep)
            elif cond["condition"] == "service_completed_successfully":
                assert services[dep]["restart"] == "no", (name, dep)
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            assert source in compose["volumes"] or (COMPOSE.parent / source).exists(), (name, vol)
    for name in ("detect", "embed", "match"):
        assert "ports" not in services[name] and isinstance(services[name]["deploy"]["replicas"], int)
    assert services["models"]["command"] == ["rfr", "models", "fetch"]
    assert services["topics"]["command"] == ["rfr", "topics", "create"]


def test_compose_env_metrics_and_scrape_targets_agree(tools: Tools, compose: dict[str, Any],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose["services"]
    scrape = {j["job_name"]: j for j in load(tools, PROM / "prometheus.yml")["scrape_configs"]}
    for svc in SERVICES:
        settings = assert_valid_settings(services[svc]["environment"], monkeypatch)
        assert settings.metrics.host == "0.0.0.0"
        assert settings.kafka.bootstrap_servers.split(":")[0] in services
        assert settings.milvus.uri.split("//")[1].split(":")[0] in services
        assert services[svc]["command"] == ["python", "-m", f"services.{svc}"]
        (sd,) = scrape[f"rfr-{svc}"]["dns_sd_configs"]
        assert sd["names"] == [svc] and sd["port"] == METRICS_PORT[svc]
        probe = " ".join(services[svc]["healthcheck"]["test"])
        assert f":{HTTP_PORT.get(svc, METRICS_PORT[svc])}/" in probe
    local_jobs = load(tools, PROM / "prometheus-local.yml")["scrape_configs"]
    local = {j["job_name"]: j["static_configs"][0]["targets"] for j in local_jobs}
    assert local == {f"rfr-{s}": [f"127.0.0.1:{METRICS_PORT[s]}"] for s in SERVICES}


def test_compose_stores_secret_and_blobs(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose["services"]
    postgres = services["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    # PostgreSQL 18 images keep PGDATA under /var/lib/postgresql/<major>/docker: the volume holds the parent.
    assert any(v.split(":")[0] in compose["volumes"] and v.split(":")[1] == "/var/lib/postgresql"
               for v in postgres["volumes"])
    for svc in ("ingest", "review"):
        env = services[svc]["environment"]
        url = env[f"RFR_{svc.upper()}__DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://") and "@postgres:5432/" in url, svc
        assert services[svc]["depends_on"]["postgres"]["condition"] == "service_healthy"
    settings = assert_valid_settings(services["review"]["environment"], monkeypatch)
    assert settings.review.http_host == "0.0.0.0"
    assert settings.review.cookie_secure is True  # the pages are served behind TLS
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert "`RFR_REVIEW__COOKIE_SECURE` | `true`" in readme and "RFR_REVIEW__TRUSTED_PROXIES" in readme
    mounts = {v.split(":")[1]: v for v in services["review"]["volumes"]}
    secret_dir = settings.review.secret_file.parent if settings.review.secret_file else settings.stack.state_dir
    assert mounts[str(secret_dir)].split(":")[0] in compose["volumes"], "the review secret must outlive containers"
    for svc in ("ingest", "review", "match"):  # match: `rfr enrol` run in its container keeps the gallery photos
        blobs = [v for v in services[svc]["volumes"] if v.split(":")[1] == str(settings.blob_dir)]
        assert blobs and not blobs[0].endswith(":ro"), svc
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)  # published on loopback only
    assert "127.0.0.1:8090:8090" in services["review"]["ports"]


# --- image -----------------------------------------------------------------------------------------------
def test_dockerfile_builds_a_non_root_python311_image(tools: Tools, monkeypatch: pytest.MonkeyPatch) -> None:
    code = ("import sys, json, dockerfile; json.dump([[c.cmd, list(c.value), list(c.flags)] "
            "for c in dockerfile.parse_file(sys.argv[1])], sys.stdout)")
    steps = json.loads(ok(tools.run(tools.python, "-c", code, DEPLOY / "Dockerfile")).strip())
    args = {v[0].split("=")[0]: v[0].split("=", 1)[1] for c, v, _ in steps if c == "ARG" and "=" in v[0]}
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    final = steps[max(i for i, (c, _, _) in enumerate(steps) if c == "FROM"):]
    users = [v[0] for c, v, _ in final if c == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    env = dict(zip(*[iter(v for c, vals, _ in final if c == "ENV" for v in vals)] * 2, strict=True))
    settings = assert_valid_settings(env, monkeypatch)
    assert settings.metrics.host == "0.0.0.0" and str(settings.model_dir) == "/models"
    assert settings.ingest.http_host == "0.0.0.0" and settings.review.http_host == "0.0.0.0"
    exposed = {int(p) for c, v, _ in final if c == "EXPOSE" for p in v}
    assert exposed == {*HTTP_PORT.values(), *METRICS_PORT.values()}
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert {"*", "!pyproject.toml", "!rfr", "!services"} <= set(ignore)


def test_the_image_installs_the_store_migrations() -> None:
    """`pip install .` installs the packages setuptools finds (pyproject: packages.find, rfr* and services*): a
    folder is one only if it and every folder above it hold an __init__.py, so each Alembic versions folder must."""
    folders = {p.parent for top in ("rfr", "services") for p in (ROOT / top).glob("**/migrations/versions/*.py")}
    assert folders, "no store migrations found"
    for folder in folders:
        for level in (folder, *folder.parents):
            if level == ROOT:
                break
            assert (level / "__init__.py").exists(), f"{level}: not a package, so not installed into the image"
