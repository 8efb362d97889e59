"""The webhook down with failurePolicy Fail: workloads are refused until it is back, yet the
chart's own Deployment installs and upgrades (its objects are excluded by label)."""

import copy
import json
import os
import subprocess
import time

import yaml

from .helpers import CA_BUNDLE, PORT, REPO, WORK, apply, check_guide_injection, eq, get, guide_deployment, kubectl


def s8_webhook_down(webhook):
    webhook.stop()
    p = apply(guide_deployment("while-down"), check=False)
    if p.returncode == 0 or "failed calling webhook" not in p.stderr:
        raise AssertionError(f"expected the API server's webhook failure, got rc={p.returncode} {p.stderr!r}")
    webhook.start()
    apply(guide_deployment("while-down"))
    check_guide_injection(get("deployment", "while-down")["spec"]["template"]["spec"])


def s13_own_upgrade_while_down(webhook):
    """With the webhook down and failurePolicy Fail, the chart's own Deployment is still created
    and upgraded: the chart labels its objects migrations.io/injection=disabled and the webhook's
    objectSelector excludes that label. The namespace carries no kubernetes.io/metadata.name
    label (v1.20 sets none), so the namespaceSelector cannot be what lets it through; the same
    Deployment without the label is refused."""
    render = os.path.join(REPO, "tests", "helm", "render-for-apiserver.sh")
    ns = "mi-self"
    out = os.path.join(WORK, "chart-self.yaml")
    env = dict(os.environ, NAMESPACE=ns, RELEASE=ns)

    def chart_docs(*flags):
        subprocess.run([render, out, "--set", f"webhook.url=https://127.0.0.1:{PORT}/mutate",
                        "--set", f"tls.caBundle={CA_BUNDLE}", *flags], check=True, capture_output=True, env=env)
        # Without the Namespace document the script prepends (it sets the label 1.20 lacks).
        return [d for d in yaml.safe_load_all(open(out)) if d and d["kind"] != "Namespace"]

    docs = chart_docs()
    mwc = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
    dep = next(d for d in docs if d["kind"] == "Deployment")
    eq(dep["metadata"]["labels"].get("migrations.io/injection"), "disabled", "label on the chart's Deployment")
    kubectl("create", "namespace", ns)
    eq(get("namespace", ns, ns="default")["metadata"].get("labels", {}).get("kubernetes.io/metadata.name"), None,
       "v1.20 sets no kubernetes.io/metadata.name label")
    # Only the chart's webhook configurations may be registered (the harness's own has no
    # objectSelector; scenario 10 replaces it, but E2E_ONLY=13 runs this one alone).
    kubectl("delete", "mutatingwebhookconfiguration", "migration-injector-e2e", "--ignore-not-found")
    kubectl("apply", "-f", "-", input=json.dumps(mwc))
    time.sleep(1)
    webhook.stop()
    try:
        # The webhook is really on the path in this namespace: an annotated app is refused...
        p = apply(guide_deployment("app-while-down"), ns=ns, check=False)
        if p.returncode == 0 or "failed calling webhook" not in p.stderr:
            raise AssertionError(f"expected the API server's webhook failure, got rc={p.returncode} {p.stderr!r}")
        # ...and so is the chart's Deployment without its label (what the chart rendered before).
        unlabelled = copy.deepcopy(dep)
        unlabelled["metadata"]["name"] = "unlabelled-copy"
        del unlabelled["metadata"]["labels"]["migrations.io/injection"]
        del unlabelled["spec"]["template"]["metadata"]["labels"]["migrations.io/injection"]
        p = apply(unlabelled, ns=ns, check=False)
        if p.returncode == 0 or "failed calling webhook" not in p.stderr:
            raise AssertionError(f"the unlabelled Deployment must wait on the webhook, got rc={p.returncode} {p.stderr!r}")
        # Install: every object of the chart is created.
        kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs))
        eq(get("deployment", dep["metadata"]["name"], ns=ns)["spec"]["replicas"], 2, "installed Deployment")
        # Upgrade: a changed Deployment (an UPDATE) goes through as well.
        upgraded = chart_docs("--set", "deployment.replicas=3", "--set", "deployment.podAnnotations.upgrade=two")
        kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(upgraded))
        stored = get("deployment", dep["metadata"]["name"], ns=ns)
        eq(stored["spec"]["replicas"], 3, "upgraded Deployment")
        eq(stored["spec"]["template"]["metadata"]["annotations"], {"upgrade": "two"}, "upgraded pod template")
        eq(stored["spec"]["template"]["spec"].get("initContainers"), None, "nothing injected into the webhook's pods")
    finally:
        webhook.start()
    kubectl("delete", "mutatingwebhookconfiguration", mwc["metadata"]["name"])
