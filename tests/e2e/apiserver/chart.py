"""The repository's manifests and chart against the API server: the kind e2e's manifests pass
server-side validation; the chart (URL mode) installs and mutates."""

import os
import subprocess
import time

from .helpers import CA_BUNDLE, PORT, REPO, WORK, apply, check_guide_injection, get, guide_deployment, kubectl


def s9_kind_manifests_valid():
    kind_dir = os.path.join(REPO, "tests", "e2e", "kind", "manifests")
    if not os.path.isdir(kind_dir):
        raise AssertionError(f"{kind_dir} is missing")
    kubectl("create", "namespace", "kind-manifests")
    for f in sorted(os.listdir(kind_dir)):
        if f.endswith((".yaml", ".yml")):
            kubectl("apply", "-n", "kind-manifests", "--dry-run=server", "-f", os.path.join(kind_dir, f))


def s10_helm_chart_url_mode():
    render = os.path.join(REPO, "tests", "helm", "render-for-apiserver.sh")
    if not os.path.exists(render):
        raise AssertionError(f"{render} is missing")
    out = os.path.join(WORK, "chart.yaml")
    subprocess.run([render, out, "--set", f"webhook.url=https://127.0.0.1:{PORT}/mutate",
                    "--set", f"tls.caBundle={CA_BUNDLE}"], check=True, capture_output=True)
    kubectl("create", "namespace", "migration-injector", check=False)
    # Every object the chart renders is validated by the API server, then really installed.
    kubectl("apply", "-n", "migration-injector", "--dry-run=server", "-f", out)
    kubectl("delete", "mutatingwebhookconfiguration", "migration-injector-e2e")
    kubectl("apply", "-n", "migration-injector", "-f", out)
    time.sleep(1)
    apply(guide_deployment("via-chart"))
    check_guide_injection(get("deployment", "via-chart")["spec"]["template"]["spec"])
