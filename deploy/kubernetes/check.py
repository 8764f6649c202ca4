#!/usr/bin/env python3
"""Renders the kustomize base and its overlays, validates every manifest with
kubernetes-validate --strict, checks the wiring, and prints a JSON summary (the metric
names the autoscalers use, the node configuration, the probe paths) for the Rust test
that checks those against a running node.

The kustomizations here only list resources (no patches, no generators), so rendering
is reading them in order; the check refuses anything else, so this stays true.
Exit 0 with the summary on stdout, or 1 with every problem on stderr.
"""
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parent
OVERLAYS = ["base", "hpa", "keda"]
# The node's drain grace after the sandbox deadline (runplane_node::drain::GRACE).
NODE_GRACE_SECS = 2
problems = []


def problem(where, what):
    problems.append(f"{where}: {what}")


def render(directory):
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    extra = set(k) - {"apiVersion", "kind", "resources"}
    if extra:
        problem(directory.name, f"kustomization uses {sorted(extra)}; keep it to resources (this check renders by reading them)")
    docs = []
    for r in k.get("resources", []):
        path = (directory / r).resolve()
        if path.is_dir():
            docs += render(path)
        else:
            docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def one(docs, kind):
    found = [d for _, d in docs if d["kind"] == kind]
    return found[0] if len(found) == 1 else None


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check(name, docs):
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, (src, d) in enumerate(docs):
            f = pathlib.Path(tmp) / f"{i:02}-{src}"
            f.write_text(yaml.safe_dump(d))
            files.append(str(f))
        run = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", *files], capture_output=True, text=True)
        if run.returncode != 0:
            problem(name, f"kubernetes-validate --strict failed:\n{run.stdout}{run.stderr}")
    dep, svc, pdb, cm = one(docs, "Deployment"), one(docs, "Service"), one(docs, "PodDisruptionBudget"), one(docs, "ConfigMap")
    cms = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "ConfigMap"}
    cm = cms.get("runplane-config")
    if not (dep and svc and pdb and cm):
        problem(name, "needs one Deployment, Service, PodDisruptionBudget and the runplane-config ConfigMap")
        return {}
    spec = dep["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    if not matches(spec["selector"]["matchLabels"], pod_labels):
        problem(name, "the Deployment's selector does not match its pod labels")
    if spec["strategy"]["rollingUpdate"]["maxUnavailable"] != 0:
        problem(name, "rolling updates must keep maxUnavailable: 0")
    c = spec["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    config = tomllib.loads(cm["data"]["runplane.toml"])
    listen_port = int(config["node"]["listen"].rsplit(":", 1)[1])
    if listen_port not in ports.values():
        problem(name, f"the node listens on {listen_port}, which is no container port")
    probes = {}
    for probe, path in [("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/livez")]:
        get = c.get(probe, {}).get("httpGet", {})
        probes[probe] = get.get("path")
        if get.get("path") != path:
            problem(name, f"{probe} must GET {path}, not {get.get('path')}")
        if get.get("port") not in ports and get.get("port") not in ports.values():
            problem(name, f"{probe} port {get.get('port')!r} is no container port")
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    deadline = config.get("sandbox", {}).get("deadline_ms", 5000) / 1000
    drain = config["node"].get("drain_delay_ms", 0) / 1000
    grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
    if not grace > pre_stop + drain + deadline + NODE_GRACE_SECS:
        problem(name, f"terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop} + drain_delay {drain} + deadline {deadline} + {NODE_GRACE_SECS}")
    env = {e["name"] for e in c.get("env", [])}
    for var in sorted(set(re.findall(r"\$\{([A-Z0-9_]+)\}", cm["data"]["runplane.toml"]))):
        if var not in env:
            problem(name, f"runplane.toml uses ${{{var}}}, which the container's env does not set")
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"] for v in spec["template"]["spec"]["volumes"]}
    if set(mounts) - volumes:
        problem(name, f"mounts without a volume: {sorted(set(mounts) - volumes)}")
    config_path = c["args"][c["args"].index("--config") + 1]
    if not config_path.startswith(mounts.get("config", "/nowhere") + "/"):
        problem(name, f"--config {config_path} is not in the config mount")
    for key in ("key_file",):
        for table in ("audit", "tokens"):
            path = config.get(table, {}).get(key, "")
            if not path.startswith(mounts.get("keys", "/nowhere") + "/"):
                problem(name, f"[{table}] {key} {path} is not in the keys Secret's mount (every pod must share it)")
    if not matches(svc["spec"]["selector"], pod_labels):
        problem(name, "the Service's selector does not match the pod labels")
    for p in svc["spec"]["ports"]:
        if p["targetPort"] not in ports:
            problem(name, f"the Service targets port {p['targetPort']!r}, which the container does not name")
    if not matches(pdb["spec"]["selector"]["matchLabels"], pod_labels):
        problem(name, "the PodDisruptionBudget's selector does not match the pod labels")
    min_replicas = spec["replicas"]
    metrics = set()
    hpa = one(docs, "HorizontalPodAutoscaler")
    if hpa:
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) != ("Deployment", dep["metadata"]["name"]):
            problem(name, "the HPA does not scale the Deployment")
        min_replicas = hpa["spec"]["minReplicas"]
        for m in hpa["spec"]["metrics"]:
            metrics.add(m["pods"]["metric"]["name"])
        rules = yaml.safe_load(cms["runplane-prometheus-adapter-rules"]["data"]["config.yaml"])["rules"]
        served = {re.match(r"'?([a-z_]+)", r["seriesQuery"]).group(1) for r in rules}
        if metrics - served:
            problem(name, f"the HPA reads {sorted(metrics - served)}, which no prometheus-adapter rule serves")
    so = one(docs, "ScaledObject")
    if so:
        if so["spec"]["scaleTargetRef"]["name"] != dep["metadata"]["name"]:
            problem(name, "the ScaledObject does not scale the Deployment")
        min_replicas = so["spec"]["minReplicaCount"]
        for t in so["spec"]["triggers"]:
            metrics |= set(re.findall(r"(runplane_[a-z_]+)", t["metadata"]["query"]))
    if not pdb["spec"]["minAvailable"] < min_replicas:
        problem(name, f"PodDisruptionBudget minAvailable {pdb['spec']['minAvailable']} must be below the minimum replicas {min_replicas}")
    sm = one(docs, "ServiceMonitor")
    if not sm or not matches(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]):
        problem(name, "a ServiceMonitor must select the Service")
    elif {e["port"] for e in sm["spec"]["endpoints"]} - {p["name"] for p in svc["spec"]["ports"]}:
        problem(name, "the ServiceMonitor scrapes a port the Service does not name")
    return {"metrics": sorted(metrics), "probes": probes, "config": cm["data"]["runplane.toml"], "env": sorted(env)}


summary = {}
for overlay in OVERLAYS:
    summary[overlay] = check(overlay, render(ROOT / overlay))
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(json.dumps(summary, indent=1))
