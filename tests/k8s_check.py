"""Checks the rendered kustomize overlays (YAML files named after their
overlay) for what the manifests promise beyond schema validity:
hardening, probes, a grace period longer than shutdown_grace, one
replica and no autoscaler wherever the state store is SQLite, and the
PrometheusRule holding exactly monitoring/prometheus/alerts.yml's groups.

Usage: k8s_check.py WORKSPACE RENDERED.yaml...
"""

import os
import sys

import yaml

workspace, files = sys.argv[1], sys.argv[2:]


def seconds(text):
    units = {"s": 1, "m": 60, "h": 3600}
    return int(text[:-1]) * units[text[-1]]


for path in files:
    overlay = os.path.basename(path)[: -len(".yaml")]
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    kinds = {d["kind"]: d for d in docs}
    dep = kinds["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c.get("env", [])}
    where = f"{overlay}: "
    assert pod["securityContext"]["runAsNonRoot"] is True, where + "pods may run as root"
    assert pod.get("automountServiceAccountToken") is False, where + "a token is mounted"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True, where + "the root filesystem is writable"
    assert sc["allowPrivilegeEscalation"] is False, where
    assert sc["capabilities"]["drop"] == ["ALL"], where
    for probe, path_ in [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
        assert c[probe]["httpGet"]["path"] == path_, where + probe
    assert "limits" in c["resources"] and "requests" in c["resources"], where + "resources"
    grace = seconds(env["SLUICE_SHUTDOWN_GRACE"]["value"])
    assert pod["terminationGracePeriodSeconds"] > grace, where + "the pod is killed before shutdown_grace ends"
    assert pod.get("topologySpreadConstraints"), where + "no topology spread"

    # SQLite serves one replica: no second one, no autoscaler.
    secret = kinds.get("Secret")
    state = (secret or {}).get("stringData", {}).get("state-url", "")
    scaled = "HorizontalPodAutoscaler" in kinds or "ScaledObject" in kinds
    if state.startswith("sqlite"):
        assert dep["spec"]["replicas"] == 1 and not scaled, where + "several replicas on SQLite"
        assert dep["spec"]["strategy"]["type"] == "Recreate", where + "two pods on one SQLite file"
        assert "PodDisruptionBudget" not in kinds, where + "a PDB that blocks every drain"
    else:
        assert dep["spec"]["replicas"] >= 2, where + "fewer than two replicas"
        assert secret is None or overlay == "base", where + "an example Secret in a real overlay"

    if "PrometheusRule" in kinds:
        alerts = yaml.safe_load(open(os.path.join(workspace, "monitoring/prometheus/alerts.yml")))
        assert kinds["PrometheusRule"]["spec"]["groups"] == alerts["groups"], (
            where + "the PrometheusRule differs from monitoring/prometheus/alerts.yml"
        )
        assert "ServiceMonitor" in kinds, where
    if "ScaledObject" in kinds:
        (trigger,) = kinds["ScaledObject"]["spec"]["triggers"]
        assert "sluice_tasks_queued" in trigger["metadata"]["query"], where
    print("ok", overlay)
