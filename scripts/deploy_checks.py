#!/usr/bin/env python3
"""Offline checks of the deployment artifacts, driven by scripts/check-deploy.sh.

Subcommands (each prints what is wrong and exits 1 if anything is):
  compose-schema  docker-compose.yml against the Compose Specification JSON schema
  compose-rules   docker-compose.yml rules the schema cannot express
  k8s-rules       a rendered overlay: hardening, probes, resources, references, metrics
                  scraping, and NetworkPolicies that admit each workload's flows
  drift           env vars each binary reads (from its --help) vs. what compose and the
                  rendered overlays set for it
  databases       every service database is created by the init script and relayed
  images          third-party images are pinned to the same tag everywhere
  help-env        print the env vars a help text declares (for debugging)

Needs PyYAML and jsonschema (the virtualenv that check-deploy.sh prepares).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from urllib.parse import urlparse

import yaml

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet", "Pod"}
WRITABLE_ROOT_ANNOTATION = "ordersaga.io/writable-root-filesystem"
ENV_IN_HELP = re.compile(r"\[env:\s*([A-Za-z_][A-Za-z0-9_]*)")


class Problems:
    def __init__(self, title: str) -> None:
        self.title = title
        self.items: list[str] = []

    def add(self, msg: str) -> None:
        self.items.append(msg)

    def finish(self) -> int:
        for item in self.items:
            print(f"  {self.title}: {item}")
        return 1 if self.items else 0


# ---------------------------------------------------------------- loading


def load_yaml_docs(path: Path) -> list[dict]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d]


def load_compose(path: Path) -> dict:
    with path.open() as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: not a YAML mapping")
    return data


def env_vars_from_help(text: str) -> set[str]:
    # clap wraps long help lines; collapse whitespace so `[env:` and the name stay together.
    return set(ENV_IN_HELP.findall(" ".join(text.split())))


def compose_env(service: dict) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        out: dict[str, str | None] = {}
        for item in env:
            key, sep, value = str(item).partition("=")
            out[key] = value if sep else None
        return out
    return {str(k): (None if v is None else str(v)) for k, v in env.items()}


def pod_spec(obj: dict) -> dict | None:
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec")
    if kind in WORKLOAD_KINDS:
        return (spec.get("template") or {}).get("spec")
    return None


def pod_template_meta(obj: dict) -> dict:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    return ((spec.get("template") or {}).get("metadata")) or {}


def containers_of(spec: dict) -> list[tuple[str, dict]]:
    out = [("container", c) for c in spec.get("containers") or []]
    out += [("initContainer", c) for c in spec.get("initContainers") or []]
    return out


def ref(obj: dict) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def index(docs: list[dict], kind: str) -> dict[str, dict]:
    return {(d.get("metadata") or {}).get("name"): d for d in docs if d.get("kind") == kind}


def secret_keys(secret: dict) -> set[str]:
    return set((secret.get("data") or {}).keys()) | set((secret.get("stringData") or {}).keys())


def configmap_keys(cm: dict) -> set[str]:
    return set((cm.get("data") or {}).keys()) | set((cm.get("binaryData") or {}).keys())


# ---------------------------------------------------------------- compose


def cmd_compose_schema(args: argparse.Namespace) -> int:
    import jsonschema

    problems = Problems(str(args.compose))
    schema = json.loads(Path(args.schema).read_text())
    data = load_compose(Path(args.compose))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    checker = cls.FORMAT_CHECKER
    # compose-go registers a "duration" format (Go durations such as 10s, 1m30s).
    go_duration = re.compile(r"^-?([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")

    @checker.checks("duration")
    def _duration(value: object) -> bool:  # noqa: ARG001 - registered by decorator
        return not isinstance(value, str) or bool(go_duration.match(value))

    validator = cls(schema, format_checker=checker)
    for err in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        location = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        problems.add(f"{location}: {err.message}")
    return problems.finish()


def cmd_compose_rules(args: argparse.Namespace) -> int:
    problems = Problems(str(args.compose))
    data = load_compose(Path(args.compose))
    services: dict = data.get("services") or {}
    for name, svc in services.items():
        svc = svc or {}
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, opts in deps.items():
            if dep not in services:
                problems.add(f"{name}: depends_on unknown service {dep!r}")
                continue
            cond = (opts or {}).get("condition", "service_started")
            target = services[dep] or {}
            if cond == "service_healthy" and not (target.get("healthcheck") or {}).get("test"):
                problems.add(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
            if cond == "service_completed_successfully" and target.get("restart", "no") not in ("no", '"no"'):
                problems.add(f"{name}: waits for {dep} to complete, but {dep} restarts ({target.get('restart')})")
        for port in svc.get("ports") or []:
            published = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published', '')}"
            if isinstance(port, dict) and port.get("host_ip") == "127.0.0.1":
                continue
            if isinstance(port, str) and port.startswith("127.0.0.1:"):
                continue
            problems.add(f"{name}: port {published!r} is not published on 127.0.0.1 only")
        image = svc.get("image")
        if not image:
            problems.add(f"{name}: no image (name it, even when built, so services can share it)")
        elif ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            problems.add(f"{name}: image {image!r} is not pinned to a tag")
        for volume in svc.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else (volume or {}).get("source", "")
            if source.startswith((".", "/")):
                path = (Path(args.compose).parent / source).resolve()
                if not path.exists():
                    problems.add(f"{name}: bind-mounted {source!r} does not exist")
    return problems.finish()


# ---------------------------------------------------------------- kubernetes


def cmd_k8s_rules(args: argparse.Namespace) -> int:
    problems = Problems(args.name)
    docs = load_yaml_docs(Path(args.render))
    configmaps = index(docs, "ConfigMap")
    secrets = index(docs, "Secret")
    # Secrets the overlay expects to exist in the cluster: `NAME KEY...` per line.
    external_secrets: dict[str, set[str]] = {}
    if args.external_secrets and Path(args.external_secrets).exists():
        for line in Path(args.external_secrets).read_text().splitlines():
            words = line.split("#", 1)[0].split()
            if words:
                external_secrets[words[0]] = set(words[1:])
    workloads = [d for d in docs if pod_spec(d) is not None]
    if not workloads:
        problems.add("no workloads rendered")

    def check_secret(where: str, name: str, key: str | None) -> None:
        if name in secrets:
            if key is not None and key not in secret_keys(secrets[name]):
                problems.add(f"{where}: Secret {name} has no key {key!r}")
        elif name in external_secrets:
            if key is not None and key not in external_secrets[name]:
                problems.add(f"{where}: external Secret {name} is not declared with key {key!r}")
        else:
            problems.add(f"{where}: Secret {name} is neither rendered nor declared external")

    for obj in workloads:
        spec = pod_spec(obj) or {}
        meta = pod_template_meta(obj)
        pod_sc = spec.get("securityContext") or {}
        writable_ok = WRITABLE_ROOT_ANNOTATION in (meta.get("annotations") or {})
        if spec.get("automountServiceAccountToken") is not False:
            problems.add(f"{ref(obj)}: automountServiceAccountToken is not false")
        for what, c in containers_of(spec):
            where = f"{ref(obj)} {what} {c.get('name')}"
            sc = c.get("securityContext") or {}
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.add(f"{where}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problems.add(f"{where}: capabilities do not drop ALL")
            if sc.get("privileged"):
                problems.add(f"{where}: privileged")
            if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
                problems.add(f"{where}: runAsNonRoot is not true")
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                problems.add(f"{where}: no RuntimeDefault seccompProfile")
            if sc.get("readOnlyRootFilesystem") is not True and not writable_ok:
                problems.add(
                    f"{where}: readOnlyRootFilesystem is not true "
                    f"(or explain why in the pod annotation {WRITABLE_ROOT_ANNOTATION})"
                )
            res = c.get("resources") or {}
            for part, keys in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
                for key in keys:
                    if key not in (res.get(part) or {}):
                        problems.add(f"{where}: no resources.{part}.{key}")
            image = c.get("image") or ""
            if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
                problems.add(f"{where}: image {image!r} is not pinned to a tag")
            if image.split(":")[0].rsplit("/", 1)[-1] == args.app_image and what == "container":
                for probe in ("livenessProbe", "readinessProbe"):
                    if "grpc" not in (c.get(probe) or {}):
                        problems.add(f"{where}: {probe} is not a grpc probe")
            for env in c.get("env") or []:
                vf = env.get("valueFrom") or {}
                if "configMapKeyRef" in vf:
                    r = vf["configMapKeyRef"]
                    if r.get("name") not in configmaps:
                        problems.add(f"{where}: env {env['name']} refers to missing ConfigMap {r.get('name')}")
                    elif r.get("key") not in configmap_keys(configmaps[r["name"]]):
                        problems.add(f"{where}: env {env['name']}: ConfigMap {r['name']} has no key {r.get('key')!r}")
                if "secretKeyRef" in vf:
                    r = vf["secretKeyRef"]
                    check_secret(f"{where} env {env['name']}", r.get("name"), r.get("key"))
            for src in c.get("envFrom") or []:
                if "configMapRef" in src and src["configMapRef"].get("name") not in configmaps:
                    problems.add(f"{where}: envFrom missing ConfigMap {src['configMapRef'].get('name')}")
                if "secretRef" in src:
                    check_secret(f"{where} envFrom", src["secretRef"].get("name"), None)
        for vol in spec.get("volumes") or []:
            if "configMap" in vol and vol["configMap"].get("name") not in configmaps:
                problems.add(f"{ref(obj)}: volume {vol.get('name')} refers to missing ConfigMap {vol['configMap'].get('name')}")
            if "secret" in vol:
                check_secret(f"{ref(obj)} volume {vol.get('name')}", vol["secret"].get("secretName"), None)

    # Selectors and targets point at something.
    templates = [((pod_template_meta(w).get("labels") or {}), w) for w in workloads]
    by_kind_name = {(d.get("kind"), (d.get("metadata") or {}).get("name")): d for d in docs}

    def selects(selector: dict) -> bool:
        return any(all(labels.get(k) == v for k, v in selector.items()) for labels, _ in templates)

    for svc in index(docs, "Service").values():
        selector = (svc.get("spec") or {}).get("selector") or {}
        if selector and not selects(selector):
            problems.add(f"{ref(svc)}: selector {selector} matches no pod template")
    for pdb in index(docs, "PodDisruptionBudget").values():
        selector = ((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if not selector or not selects(selector):
            problems.add(f"{ref(pdb)}: selector {selector} matches no pod template")
    hpa_targets = set()
    for hpa in index(docs, "HorizontalPodAutoscaler").values():
        target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        hpa_targets.add((target.get("kind"), target.get("name")))
        if (target.get("kind"), target.get("name")) not in by_kind_name:
            problems.add(f"{ref(hpa)}: scale target {target.get('kind')}/{target.get('name')} is not rendered")
    for dep in index(docs, "Deployment").values():
        key = ("Deployment", dep["metadata"]["name"])
        component = ((dep.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component")
        if key in hpa_targets and "replicas" in (dep.get("spec") or {}):
            problems.add(f"{ref(dep)}: sets replicas although an HPA scales it (apply would fight the HPA)")
        if component == "grpc-service" and key not in hpa_targets:
            problems.add(f"{ref(dep)}: gRPC service without a HorizontalPodAutoscaler")
        if component == "relay" and key in hpa_targets:
            problems.add(f"{ref(dep)}: the relay must not be autoscaled")
    policies = index(docs, "NetworkPolicy").values()
    if not any(
        (p.get("spec") or {}).get("podSelector") == {}
        and "Ingress" in ((p.get("spec") or {}).get("policyTypes") or [])
        and not (p.get("spec") or {}).get("ingress")
        for p in policies
    ):
        problems.add("no default-deny ingress NetworkPolicy")
    check_metrics(docs, workloads, args.app_image, problems)
    check_flows(docs, workloads, problems)
    return problems.finish()


# ---------------------------------------------------------------- metrics and network flows

# Variables whose values name a destination the pod must be able to reach: NAME -> default port.
DESTINATION_VARS = {
    "DATABASE_URL": 5432,
    "RELAY_DATABASE_URLS": 5432,
    "KAFKA_BROKERS": 9092,
    "OTEL_EXPORTER_OTLP_ENDPOINT": 4317,
    "NOTIFICATION_WEBHOOK_URL": 443,
}
DNS_PORT = 53


def resolved_env(docs: list[dict], container: dict) -> dict[str, str | None]:
    """The container's environment as far as the render tells: None where a value is not
    in the render (an external Secret)."""
    configmaps = index(docs, "ConfigMap")
    secrets = index(docs, "Secret")

    def secret_values(secret: dict) -> dict[str, str]:
        import base64

        out = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        out.update(secret.get("stringData") or {})
        return out

    env: dict[str, str | None] = {}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        if "configMapRef" in src and src["configMapRef"].get("name") in configmaps:
            for k, v in (configmaps[src["configMapRef"]["name"]].get("data") or {}).items():
                env[prefix + k] = v
        if "secretRef" in src and src["secretRef"].get("name") in secrets:
            for k, v in secret_values(secrets[src["secretRef"]["name"]]).items():
                env[prefix + k] = v
    for e in container.get("env") or []:
        vf = e.get("valueFrom") or {}
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif "configMapKeyRef" in vf:
            r = vf["configMapKeyRef"]
            env[e["name"]] = ((configmaps.get(r.get("name")) or {}).get("data") or {}).get(r.get("key"))
        elif "secretKeyRef" in vf:
            r = vf["secretKeyRef"]
            env[e["name"]] = secret_values(secrets[r["name"]]).get(r.get("key")) if r.get("name") in secrets else None
        else:
            env[e["name"]] = None
    return env


def destinations(var: str, value: str) -> list[tuple[str, int]]:
    """(host, port) pairs a variable's value points at."""
    out = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        if "://" not in item:
            item = "tcp://" + item
        u = urlparse(item)
        if not u.hostname:
            continue
        default = 80 if u.scheme == "http" and var == "NOTIFICATION_WEBHOOK_URL" else DESTINATION_VARS[var]
        out.append((u.hostname, u.port or default))
    return out


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against labels; {} matches all."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def policies_for(docs: list[dict], labels: dict, direction: str) -> list[dict]:
    out = []
    for p in index(docs, "NetworkPolicy").values():
        spec = p.get("spec") or {}
        types = spec.get("policyTypes") or (["Ingress", "Egress"] if spec.get("egress") else ["Ingress"])
        if direction in types and selector_matches(spec.get("podSelector"), labels):
            out.append(p)
    return out


def port_allowed(rule: dict, port: int, protocol: str, named: dict[str, int]) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        want = p.get("port")
        if want is None:
            return True
        want = named.get(want, want) if isinstance(want, str) else want
        if want == port or (p.get("endPort") and want <= port <= p["endPort"]):
            return True
    return False


def peer_matches(peers: list[dict] | None, labels: dict | None) -> bool:
    """Whether a from/to list admits a pod of this namespace with `labels` (None: a
    destination outside the render, which only ipBlock or namespace peers can describe, so
    any peer list is taken to admit it)."""
    if not peers:
        return True
    if labels is None:
        return True
    for peer in peers:
        if "ipBlock" in peer:
            continue
        ns = peer.get("namespaceSelector")
        if ns is not None and ns != {}:
            continue  # another namespace, as far as this render can tell
        if selector_matches(peer.get("podSelector"), labels):
            return True
    return False


def container_ports(spec: dict) -> dict[str, int]:
    out = {}
    for c in spec.get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name"):
                out[p["name"]] = p.get("containerPort")
    return out


def check_metrics(docs: list[dict], workloads: list[dict], app_image: str, problems: Problems) -> None:
    """Every application container serves /metrics on a port named `metrics`, which its pod
    annotations point Prometheus at, and which METRICS_LISTEN_ADDR binds."""
    for obj in workloads:
        spec = pod_spec(obj) or {}
        annotations = pod_template_meta(obj).get("annotations") or {}
        for c in spec.get("containers") or []:
            if (c.get("image") or "").split(":")[0].rsplit("/", 1)[-1] != app_image:
                continue
            where = f"{ref(obj)} container {c.get('name')}"
            ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
            if "metrics" not in ports:
                problems.add(f"{where}: no container port named metrics")
                continue
            if annotations.get("prometheus.io/scrape") != "true":
                problems.add(f"{where}: pod annotation prometheus.io/scrape is not \"true\"")
            if annotations.get("prometheus.io/port") != str(ports["metrics"]):
                problems.add(
                    f"{where}: pod annotation prometheus.io/port {annotations.get('prometheus.io/port')!r} "
                    f"is not the metrics port {ports['metrics']}"
                )
            addr = resolved_env(docs, c).get("METRICS_LISTEN_ADDR")
            if addr is not None:
                bound = addr.rsplit(":", 1)[-1] if addr else ""
                if bound != str(ports["metrics"]):
                    problems.add(f"{where}: METRICS_LISTEN_ADDR {addr!r} does not bind the metrics port {ports['metrics']}")


def check_flows(docs: list[dict], workloads: list[dict], problems: Problems) -> None:
    """The NetworkPolicies let every workload reach what its environment points at (its
    database, Kafka, the trace collector, a webhook, and DNS for the names) and let
    Prometheus reach the metrics ports. A destination that is a Service of the render is
    checked on both ends: the client's egress and the server pods' ingress."""
    services = index(docs, "Service")
    pods = [((pod_template_meta(w).get("labels") or {}), pod_spec(w) or {}, w) for w in workloads]

    def egress_ok(labels: dict, port: int, protocol: str, dest_labels: dict | None) -> bool:
        isolating = policies_for(docs, labels, "Egress")
        if not isolating:
            return True
        return any(
            port_allowed(rule, port, protocol, {}) and peer_matches(rule.get("to"), dest_labels)
            for p in isolating
            for rule in (p.get("spec") or {}).get("egress") or []
        )

    def ingress_ok(labels: dict, named: dict[str, int], port: int, src_labels: dict | None) -> bool:
        isolating = policies_for(docs, labels, "Ingress")
        if not isolating:
            return True
        return any(
            port_allowed(rule, port, "TCP", named) and peer_matches(rule.get("from"), src_labels)
            for p in isolating
            for rule in (p.get("spec") or {}).get("ingress") or []
        )

    for labels, spec, obj in pods:
        needs_dns = False
        for c in containers_of(spec):
            env = resolved_env(docs, c[1])
            for var in DESTINATION_VARS:
                value = env.get(var)
                if value is None and var in env and var in ("DATABASE_URL", "RELAY_DATABASE_URLS"):
                    value = "external:5432"  # an external Secret: PostgreSQL on its usual port
                for host, port in destinations(var, value or ""):
                    where = f"{ref(obj)} container {c[1].get('name')}: {var} {host}:{port}"
                    if host not in ("localhost", "127.0.0.1"):
                        needs_dns = needs_dns or not host.replace(".", "").isdigit()
                    svc = services.get(host.split(".", 1)[0]) if "." not in host or ".svc" in host else None
                    targets = []
                    if svc is not None:
                        for sp in (svc.get("spec") or {}).get("ports") or []:
                            if sp.get("port") == port:
                                sel = (svc.get("spec") or {}).get("selector") or {}
                                for tl, tspec, tobj in pods:
                                    if sel and all(tl.get(k) == v for k, v in sel.items()):
                                        tp = sp.get("targetPort", port)
                                        named = container_ports(tspec)
                                        targets.append((tl, named, named.get(tp, tp) if isinstance(tp, str) else tp, tobj))
                    if targets:
                        for tl, named, tport, tobj in targets:
                            if not egress_ok(labels, tport, "TCP", tl):
                                problems.add(f"{where}: egress to {ref(tobj)} port {tport} is not allowed")
                            if not ingress_ok(tl, named, tport, labels):
                                problems.add(f"{where}: {ref(tobj)} does not admit it on port {tport}")
                    elif not egress_ok(labels, port, "TCP", None):
                        problems.add(f"{where}: egress on port {port} is not allowed")
        if needs_dns and not egress_ok(labels, DNS_PORT, "UDP", None):
            problems.add(f"{ref(obj)}: egress to DNS (UDP {DNS_PORT}) is not allowed, but it resolves names")
        named = container_ports(spec)
        if "metrics" in named and not ingress_ok(labels, named, named["metrics"], None):
            problems.add(f"{ref(obj)}: no NetworkPolicy admits scrapes of its metrics port {named['metrics']}")


# ---------------------------------------------------------------- drift


def k8s_container_env(docs: list[dict], container: dict, where: str, problems: Problems) -> set[str]:
    configmaps = index(docs, "ConfigMap")
    secrets = index(docs, "Secret")
    names = {e["name"] for e in container.get("env") or []}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        if "configMapRef" in src:
            name = src["configMapRef"].get("name")
            if name not in configmaps:
                problems.add(f"{where}: envFrom ConfigMap {name} is not in the render; cannot tell what it sets")
                continue
            names |= {prefix + k for k in configmap_keys(configmaps[name])}
        if "secretRef" in src:
            name = src["secretRef"].get("name")
            if name not in secrets:
                problems.add(f"{where}: envFrom Secret {name} is not in the render; use env valueFrom secretKeyRef")
                continue
            names |= {prefix + k for k in secret_keys(secrets[name])}
    return names


def compare(where: str, binary: str, wanted: set[str], have: set[str], problems: Problems) -> None:
    for var in sorted(wanted - have):
        problems.add(f"{where}: {var} is read by {binary} but not set")
    for var in sorted(have - wanted):
        problems.add(f"{where}: {var} is set but {binary} does not read it")


def cmd_drift(args: argparse.Namespace) -> int:
    problems = Problems("drift")
    help_dir = Path(args.help_dir)
    binaries: dict[str, set[str]] = {}
    for path in sorted(help_dir.glob("*.txt")):
        found = env_vars_from_help(path.read_text())
        if not found:
            problems.add(f"{path.stem}: its --help declares no [env: ...] variable")
        binaries[path.stem] = found
    if not binaries:
        problems.add(f"no help texts in {help_dir}")

    if args.compose:
        services = load_compose(Path(args.compose)).get("services") or {}
        for binary, wanted in binaries.items():
            where = f"docker-compose.yml service {binary}"
            svc = services.get(binary)
            if svc is None:
                problems.add(f"{where}: missing (every binary runs as the compose service of its name)")
                continue
            if svc.get("env_file"):
                problems.add(f"{where}: env_file is not supported by this check; use environment")
            command = svc.get("command")
            first = command[0] if isinstance(command, list) and command else str(command or "").split(" ")[0]
            if first != binary:
                problems.add(f"{where}: command {command!r} does not run {binary}")
            compare(where, binary, wanted, set(compose_env(svc)), problems)

    for spec in args.render or []:
        name, _, file = spec.partition("=")
        docs = load_yaml_docs(Path(file))
        for binary, wanted in binaries.items():
            found = False
            for obj in docs:
                spec_ = pod_spec(obj)
                if spec_ is None:
                    continue
                for _, c in containers_of(spec_):
                    if c.get("name") != binary:
                        continue
                    found = True
                    where = f"{name} {ref(obj)} container {binary}"
                    command = c.get("command") or c.get("args") or []
                    if not command or command[0] != binary:
                        problems.add(f"{where}: command {command!r} does not run {binary}")
                    compare(where, binary, wanted, k8s_container_env(docs, c, where, problems), problems)
            if not found:
                problems.add(f"{name}: no container named {binary} in any workload")
    return problems.finish()


# ---------------------------------------------------------------- databases


def db_names(urls: str) -> list[str]:
    return [urlparse(u.strip()).path.lstrip("/") for u in urls.split(",") if u.strip()]


def cmd_databases(args: argparse.Namespace) -> int:
    problems = Problems("databases")
    created = set(re.findall(r"(?im)^\s*CREATE\s+DATABASE\s+\"?([A-Za-z0-9_]+)", Path(args.init_sql).read_text()))
    if not created:
        problems.add(f"{args.init_sql} creates no database")

    def check(where: str, service_dbs: dict[str, str], relay_dbs: list[str]) -> None:
        for owner, db in service_dbs.items():
            if db not in created:
                problems.add(f"{where}: {owner} uses {db}, which {args.init_sql} does not create")
            if db not in relay_dbs:
                problems.add(f"{where}: the relay does not read {db} ({owner}'s outbox would never be published)")
        for db in relay_dbs:
            if db not in created:
                problems.add(f"{where}: the relay reads {db}, which {args.init_sql} does not create")

    if args.compose:
        services = load_compose(Path(args.compose)).get("services") or {}
        service_dbs, relay_dbs = {}, []
        for name, svc in services.items():
            env = compose_env(svc or {})
            if env.get("DATABASE_URL"):
                service_dbs[name] = db_names(env["DATABASE_URL"])[0]
            if env.get("RELAY_DATABASE_URLS"):
                relay_dbs += db_names(env["RELAY_DATABASE_URLS"])
        check("docker-compose.yml", service_dbs, relay_dbs)

    if args.secret_render:
        import base64

        name, _, file = args.secret_render.partition("=")
        for secret in index(load_yaml_docs(Path(file)), "Secret").values():
            values = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
            values.update(secret.get("stringData") or {})
            service_dbs = {k: db_names(v)[0] for k, v in values.items() if k.endswith("-database-url")}
            relay_dbs = [db for k, v in values.items() if k.endswith("-database-urls") for db in db_names(v)]
            if service_dbs or relay_dbs:
                check(f"{name} Secret {secret['metadata']['name']}", service_dbs, relay_dbs)
    return problems.finish()


# ---------------------------------------------------------------- images


def cmd_images(args: argparse.Namespace) -> int:
    problems = Problems("images")
    seen: dict[str, dict[str, list[str]]] = {}

    def note(image: str, where: str) -> None:
        name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
        if name.rsplit("/", 1)[-1] == args.app_image:
            return
        seen.setdefault(name, {}).setdefault(tag or "(none)", []).append(where)

    if args.compose:
        for svc_name, svc in (load_compose(Path(args.compose)).get("services") or {}).items():
            if (svc or {}).get("image"):
                note(svc["image"], f"docker-compose.yml {svc_name}")
    for spec in args.render or []:
        name, _, file = spec.partition("=")
        for obj in load_yaml_docs(Path(file)):
            for _, c in containers_of(pod_spec(obj) or {}):
                note(c.get("image") or "", f"{name} {ref(obj)}")
    for image, tags in sorted(seen.items()):
        if len(tags) > 1:
            detail = "; ".join(f"{t} in {', '.join(ws)}" for t, ws in sorted(tags.items()))
            problems.add(f"{image} is pinned to different tags: {detail}")
    return problems.finish()


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("compose-schema")
    p.add_argument("--schema", required=True)
    p.add_argument("compose")
    p.set_defaults(func=cmd_compose_schema)

    p = sub.add_parser("compose-rules")
    p.add_argument("compose")
    p.set_defaults(func=cmd_compose_rules)

    p = sub.add_parser("k8s-rules")
    p.add_argument("--name", required=True)
    p.add_argument("--app-image", default="ordersaga", help="image of the Rust binaries")
    p.add_argument("--external-secrets", help="file listing Secrets expected in the cluster: NAME KEY...")
    p.add_argument("render")
    p.set_defaults(func=cmd_k8s_rules)

    p = sub.add_parser("drift")
    p.add_argument("--help-dir", required=True, help="one BINARY.txt with the --help output per binary")
    p.add_argument("--compose")
    p.add_argument("--render", action="append", help="NAME=FILE of a rendered overlay")
    p.set_defaults(func=cmd_drift)

    p = sub.add_parser("databases")
    p.add_argument("--init-sql", required=True)
    p.add_argument("--compose")
    p.add_argument("--secret-render", help="NAME=FILE of a rendered overlay holding the DB Secret")
    p.set_defaults(func=cmd_databases)

    p = sub.add_parser("images")
    p.add_argument("--app-image", default="ordersaga")
    p.add_argument("--compose")
    p.add_argument("--render", action="append")
    p.set_defaults(func=cmd_images)

    p = sub.add_parser("help-env")
    p.add_argument("file")
    p.set_defaults(func=lambda a: print("\n".join(sorted(env_vars_from_help(Path(a.file).read_text())))) or 0)

    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
