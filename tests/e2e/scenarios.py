"""Scenarios against a real kube-apiserver. Every assertion reads back what the API server
stored (or returned for a server-side dry run), never the webhook's own output.

Run by tests/e2e/run.sh, which provides E2E_* environment variables and KUBECONFIG."""

import base64
import copy
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

import yaml  # PyYAML, which the chart tests use as well

WORK = os.environ["E2E_WORK"]
BIN = os.environ["E2E_BIN"]
REPO = os.environ["E2E_REPO"]
PORT = int(os.environ["E2E_WEBHOOK_PORT"])
ADMIN = int(os.environ["E2E_ADMIN_PORT"])
CA_BUNDLE = open(os.path.join(WORK, "cabundle")).read().strip()
IMAGE = "ghcr.io/repo/migrations:v0.1.2"
GUIDE_ARGS = ["migrate", "apply", "-c", "file:///etc/atlas/atlas.hcl", "--env", "k8s"]
FAILED = []


def kubectl(*args, input=None, check=True):
    p = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {p.stderr.strip()}")
    return p


def apply(obj, *flags, ns="default", check=True):
    return kubectl("apply", "-n", ns, "-f", "-", *flags, input=json.dumps(obj), check=check)


def get(kind, name, ns="default"):
    return json.loads(kubectl("get", kind, name, "-n", ns, "-o", "json").stdout)


def exists(kind, name, ns="default"):
    return kubectl("get", kind, name, "-n", ns, check=False).returncode == 0


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def eq(actual, expected, what):
    if actual != expected:
        def show(v):
            # Sets of DER certificates (pem_ders) print as their count and fingerprints.
            if isinstance(v, (set, frozenset)):
                return f"{len(v)} certificate(s) {sorted(hashlib.sha256(d).hexdigest()[:12] for d in v)}"
            return json.dumps(v)
        raise AssertionError(f"{what}:\n  expected {show(expected)}\n  actual   {show(actual)}")


class Webhook:
    """The webhook process: `migration-injector serve` with the generated certificate."""

    def __init__(self):
        self.proc = None

    def start(self):
        log = open(os.path.join(WORK, "webhook.log"), "a")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", f"127.0.0.1:{PORT}", "--admin-listen", f"127.0.0.1:{ADMIN}",
             "--tls-cert-file", f"{WORK}/certs/tls.crt", "--tls-key-file", f"{WORK}/certs/tls.key",
             "--shutdown-grace-seconds", "5", "--shutdown-delay-seconds", "1"],
            stdout=log, stderr=log)
        open(os.path.join(WORK, "webhook.pid"), "w").write(str(self.proc.pid))
        for _ in range(100):
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/readyz", timeout=1).status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("webhook did not become ready")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=15)
        eq(rc, 0, "webhook exit code after SIGTERM")


def webhook_configuration():
    def rule(groups, versions, resources):
        return {"apiGroups": groups, "apiVersions": versions, "operations": ["CREATE", "UPDATE"],
                "resources": resources, "scope": "Namespaced"}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "migration-injector-e2e"},
        "webhooks": [{
            "name": "inject.migrations.io",
            "clientConfig": {"url": f"https://127.0.0.1:{PORT}/mutate", "caBundle": CA_BUNDLE},
            "rules": [rule(["apps"], ["v1"], ["deployments", "statefulsets", "daemonsets", "replicasets"]),
                      rule(["batch"], ["v1", "v1beta1"], ["jobs", "cronjobs"]),
                      rule([""], ["v1"], ["pods"])],
            "namespaceSelector": {"matchExpressions": [
                {"key": "migrations.io/injection", "operator": "NotIn", "values": ["disabled"]}]},
            "failurePolicy": "Fail", "sideEffects": "None", "reinvocationPolicy": "IfNeeded",
            "admissionReviewVersions": ["v1"], "timeoutSeconds": 10,
        }],
    }


def guide_deployment(name="nginx-deployment", annotations=None):
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name},
                     "annotations": {"migrations.io/image": IMAGE, **(annotations or {})}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "nginx", "image": "nginx:1.14.2",
                                                       "ports": [{"containerPort": 80}]}]}}},
    }


def init_named(spec, name):
    return [c for c in spec.get("initContainers", []) if c["name"] == name]


def check_guide_injection(spec, image=IMAGE):
    migrate = init_named(spec, "migrate")
    eq(len(migrate), 1, "one migrate init container")
    c = migrate[0]
    eq(c["image"], image, "image")
    eq(c["imagePullPolicy"], "Always", "imagePullPolicy")
    eq(c["args"], GUIDE_ARGS, "args")
    eq(c["volumeMounts"], [{"name": "atlas-project", "mountPath": "/etc/atlas", "readOnly": True}], "mount")
    # The API server's defaults were applied on top of the patch.
    eq(c["terminationMessagePath"], "/dev/termination-log", "defaulted terminationMessagePath")
    eq(c["securityContext"]["capabilities"], {"drop": ["ALL"]}, "restricted securityContext")
    vols = [v for v in spec.get("volumes", []) if v["name"] == "atlas-project"]
    eq(vols, [{"name": "atlas-project", "secret": {"secretName": "atlas-project", "defaultMode": 420}}], "volume")


# --- scenarios -------------------------------------------------------------------------------

def s1_guide_deployment():
    apply(guide_deployment())
    d = get("deployment", "nginx-deployment")
    check_guide_injection(d["spec"]["template"]["spec"])
    eq([c["name"] for c in d["spec"]["template"]["spec"]["containers"]], ["nginx"], "app containers")


def s2_create_deployment_and_existing_init():
    created = json.loads(kubectl("create", "deployment", "plain", "--image=nginx:1.25",
                                 "--dry-run=client", "-o", "json").stdout)
    created["metadata"]["annotations"] = {"migrations.io/image": IMAGE}
    apply(created)
    spec = get("deployment", "plain")["spec"]["template"]["spec"]
    check_guide_injection(spec)
    eq([c["name"] for c in spec["initContainers"]], ["migrate"], "only migrate")

    d = guide_deployment("with-init")
    t = d["spec"]["template"]["spec"]
    t["initContainers"] = [{"name": "wait-for-db", "image": "busybox:1.36", "command": ["sh", "-c", "true"]}]
    t["volumes"] = [{"name": "cache", "emptyDir": {}}]
    apply(d)
    spec = get("deployment", "with-init")["spec"]["template"]["spec"]
    eq([c["name"] for c in spec["initContainers"]], ["wait-for-db", "migrate"], "init order")
    eq([v["name"] for v in spec["volumes"]], ["cache", "atlas-project"], "volumes")
    check_guide_injection(spec)


def s3_updates():
    d = guide_deployment("upd")
    apply(d)
    first = get("deployment", "upd")
    # Same manifest again: nothing changes, nothing duplicates.
    apply(d)
    again = get("deployment", "upd")
    eq(again["metadata"]["generation"], first["metadata"]["generation"], "generation after re-apply")
    eq(again["spec"], first["spec"], "spec after re-apply")
    # Image change: the injected container follows.
    d2 = copy.deepcopy(d)
    d2["metadata"]["annotations"]["migrations.io/image"] = "ghcr.io/repo/migrations:v0.2.0"
    apply(d2)
    spec = get("deployment", "upd")["spec"]["template"]["spec"]
    check_guide_injection(spec, "ghcr.io/repo/migrations:v0.2.0")
    # kubectl annotate (an UPDATE that does not come from apply) as well.
    kubectl("annotate", "deployment", "upd", "migrations.io/env=prod", "--overwrite")
    spec = get("deployment", "upd")["spec"]["template"]["spec"]
    eq(init_named(spec, "migrate")[0]["args"][-1], "prod", "env after annotate")
    kubectl("annotate", "deployment", "upd", "migrations.io/env-")
    # Opt-out: exactly the injected parts disappear.
    d3 = copy.deepcopy(d)
    del d3["metadata"]["annotations"]
    apply(d3)
    out = get("deployment", "upd")
    spec = out["spec"]["template"]["spec"]
    eq(spec.get("initContainers"), None, "initContainers after opt-out")
    eq(spec.get("volumes"), None, "volumes after opt-out")
    eq(out["spec"]["template"]["metadata"].get("annotations"), None, "template annotations after opt-out")
    eq([c["name"] for c in spec["containers"]], ["nginx"], "user containers kept")


def s4_overrides_and_kinds():
    overrides = {
        "migrations.io/secret": "prod-db", "migrations.io/volume-name": "db-config",
        "migrations.io/env": "prod", "migrations.io/mount-path": "/config",
        "migrations.io/config-file": "project.hcl", "migrations.io/pull-policy": "IfNotPresent",
        "migrations.io/container-name": "schema", "migrations.io/position": "first",
        "migrations.io/cpu-request": "0.1", "migrations.io/cpu-limit": "1",
        "migrations.io/memory-request": "64Mi", "migrations.io/memory-limit": "256Mi",
    }
    d = guide_deployment("overrides", overrides)
    d["spec"]["template"]["spec"]["initContainers"] = [{"name": "wait", "image": "busybox:1.36"}]
    apply(d)
    spec = get("deployment", "overrides")["spec"]["template"]["spec"]
    c = spec["initContainers"][0]
    eq(c["name"], "schema", "container-name + position first")
    eq(c["imagePullPolicy"], "IfNotPresent", "pull-policy")
    eq(c["args"], ["migrate", "apply", "-c", "file:///config/project.hcl", "--env", "prod"], "args")
    eq(c["resources"], {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}}, "resources")
    eq(c["volumeMounts"][0]["name"], "db-config", "volume-name")
    eq([v for v in spec["volumes"] if v["name"] == "db-config"][0]["secret"]["secretName"], "prod-db", "secret")
    # The API server canonicalised 0.1 to 100m; re-applying must not fight it.
    gen = get("deployment", "overrides")["metadata"]["generation"]
    apply(d)
    eq(get("deployment", "overrides")["metadata"]["generation"], gen, "generation after re-apply with quantities")

    d = guide_deployment("flyway", {"migrations.io/command": '["flyway"]', "migrations.io/args": '["migrate"]'})
    apply(d)
    c = init_named(get("deployment", "flyway")["spec"]["template"]["spec"], "migrate")[0]
    eq((c["command"], c["args"]), (["flyway"], ["migrate"]), "command/args")

    pod_spec = {"containers": [{"name": "app", "image": "app:1"}]}
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": "sts", "annotations": {"migrations.io/image": IMAGE}},
           "spec": {"serviceName": "sts", "selector": {"matchLabels": {"app": "sts"}},
                    "template": {"metadata": {"labels": {"app": "sts"}}, "spec": pod_spec}}}
    apply(sts)
    check_guide_injection(get("statefulset", "sts")["spec"]["template"]["spec"])
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "job", "annotations": {"migrations.io/image": IMAGE}},
           "spec": {"template": {"spec": {**pod_spec, "restartPolicy": "Never"}}}}
    apply(job)
    check_guide_injection(get("job", "job")["spec"]["template"]["spec"])
    # Job templates are immutable: a later annotation change is allowed, with a warning, unpatched.
    p = kubectl("annotate", "job", "job", "migrations.io/image=ghcr.io/repo/migrations:v9", "--overwrite")
    if "cannot change after creation" not in p.stderr:
        raise AssertionError(f"expected a warning on Job update, got {p.stderr!r}")
    check_guide_injection(get("job", "job")["spec"]["template"]["spec"])
    cron = {"apiVersion": "batch/v1beta1", "kind": "CronJob",
            "metadata": {"name": "cron", "annotations": {"migrations.io/image": IMAGE}},
            "spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": {
                "spec": {**pod_spec, "restartPolicy": "OnFailure"}}}}}}
    apply(cron)
    check_guide_injection(get("cronjob", "cron")["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet",
          "metadata": {"name": "ds", "annotations": {"migrations.io/image": IMAGE}},
          "spec": {"selector": {"matchLabels": {"app": "ds"}},
                   "template": {"metadata": {"labels": {"app": "ds"}}, "spec": pod_spec}}}
    apply(ds)
    check_guide_injection(get("daemonset", "ds")["spec"]["template"]["spec"])
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "pod", "annotations": {"migrations.io/image": IMAGE}}, "spec": pod_spec}
    apply(pod)
    check_guide_injection(get("pod", "pod")["spec"])


def s5_bad_annotations():
    cases = [
        ({"migrations.io/pull-policy": "Sometimes"},
         'annotation migrations.io/pull-policy="Sometimes" is not an image pull policy; fix: use Always, IfNotPresent or Never'),
        ({"migrations.io/image": "Not An Image"}, 'annotation migrations.io/image="Not An Image" is not a valid image reference'),
        ({"migrations.io/args": "migrate up"}, 'annotation migrations.io/args="migrate up" is not a JSON array of strings'),
    ]
    for i, (ann, message) in enumerate(cases):
        name = f"bad-{i}"
        p = apply(guide_deployment(name, ann), check=False)
        if p.returncode == 0 or message not in p.stderr:
            raise AssertionError(f"expected refusal with {message!r}, got rc={p.returncode} {p.stderr!r}")
        if exists("deployment", name):
            raise AssertionError(f"{name} was stored despite the denial")
    d = guide_deployment("clash")
    d["spec"]["template"]["spec"]["initContainers"] = [{"name": "migrate", "image": "mine:1"}]
    p = apply(d, check=False)
    if p.returncode == 0 or "migrations.io/container-name" not in p.stderr:
        raise AssertionError(f"expected clash denial, got {p.stderr!r}")


def s6_dry_run_and_server_side():
    p = apply(guide_deployment("dry"), "--dry-run=server", "-o", "json")
    check_guide_injection(json.loads(p.stdout)["spec"]["template"]["spec"])
    if exists("deployment", "dry"):
        raise AssertionError("dry-run stored the object")
    apply(guide_deployment("ssa"), "--server-side", "--field-manager=e2e")
    check_guide_injection(get("deployment", "ssa")["spec"]["template"]["spec"])
    apply(guide_deployment("ssa"), "--server-side", "--field-manager=e2e")
    spec = get("deployment", "ssa")["spec"]["template"]["spec"]
    eq(len(spec["initContainers"]), 1, "no duplicate after second server-side apply")


def s7_unannotated_unchanged():
    kubectl("create", "namespace", "opted-out")
    kubectl("label", "namespace", "opted-out", "migrations.io/injection=disabled")
    d = guide_deployment("plain-app")
    del d["metadata"]["annotations"]
    d["spec"]["template"]["spec"]["initContainers"] = [{"name": "wait", "image": "busybox:1.36"}]
    apply(d)
    apply(d, ns="opted-out")
    a = kubectl("get", "deployment", "plain-app", "-o", "json").stdout
    b = kubectl("get", "deployment", "plain-app", "-n", "opted-out", "-o", "json").stdout
    eq(json.dumps(json.loads(a)["spec"], sort_keys=True), json.dumps(json.loads(b)["spec"], sort_keys=True),
       "spec through the webhook vs. without it")


def s8_webhook_down(webhook):
    webhook.stop()
    p = apply(guide_deployment("while-down"), check=False)
    if p.returncode == 0 or "failed calling webhook" not in p.stderr:
        raise AssertionError(f"expected the API server's webhook failure, got rc={p.returncode} {p.stderr!r}")
    webhook.start()
    apply(guide_deployment("while-down"))
    check_guide_injection(get("deployment", "while-down")["spec"]["template"]["spec"])


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


def s12_controller_copies_untouched():
    """A Deployment's ReplicaSet and that ReplicaSet's Pod carry the injected template (and the
    record) but not the opt-in; no controller-manager runs here, so create them as it would."""
    apply(guide_deployment("parent"))
    d = get("deployment", "parent")
    template = d["spec"]["template"]
    owner = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "parent",
              "uid": d["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": "parent-abc", "ownerReferences": owner, "labels": template["metadata"]["labels"]},
          "spec": {"replicas": 1, "selector": d["spec"]["selector"], "template": template}}
    kubectl("create", "-f", "-", input=json.dumps(rs))
    stored = get("replicaset", "parent-abc")
    eq(stored["spec"]["template"], template, "ReplicaSet template = its Deployment's")
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {**template["metadata"], "name": "parent-abc-1",
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "parent-abc",
                                             "uid": stored["metadata"]["uid"], "controller": True}]},
           "spec": template["spec"]}
    kubectl("create", "-f", "-", input=json.dumps(pod))
    stored_pod = get("pod", "parent-abc-1")
    eq([c["name"] for c in stored_pod["spec"]["initContainers"]], ["migrate"], "Pod keeps the injected container")
    eq(len(stored_pod["spec"]["volumes"]), 1, "Pod volumes")


def pem_ders(pem):
    """The certificates of a PEM text (or of a base64 caBundle), as a set of DER bytes."""
    if pem and "-----BEGIN" not in pem:
        pem = base64.b64decode(pem).decode()
    blocks = [b for b in (pem or "").split("-----END CERTIFICATE-----") if "-----BEGIN CERTIFICATE-----" in b]
    return {ssl.PEM_cert_to_DER_cert(b.strip() + "\n-----END CERTIFICATE-----\n") for b in blocks}


class AdmissionLoad:
    """Server-side dry-run creates of an annotated Deployment in a loop, counting failures and
    the ones stored without the injection, while something else happens."""

    def __init__(self, ns):
        import threading
        self.ns, self.ok, self.failed, self.errors = ns, 0, 0, []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        body = json.dumps(guide_deployment("load"))
        while not self.stop_flag.is_set():
            p = kubectl("create", "-n", self.ns, "--dry-run=server", "-o", "json", "-f", "-",
                        input=body, check=False)
            if p.returncode == 0 and init_named(json.loads(p.stdout)["spec"]["template"]["spec"], "migrate"):
                self.ok += 1
            else:
                self.failed += 1
                self.errors.append(p.stderr.strip() or "stored without the init container")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join(timeout=30)


def verify_served_by(ca_pem, ports):
    """Each port serves a certificate that verifies against ca_pem (and names 127.0.0.1)."""
    for port in ports:
        ctx = ssl.create_default_context(cadata=ca_pem)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                if not tls.getpeercert():
                    raise AssertionError(f"replica on {port} presented no certificate")


def s11_self_managed_replicas_race():
    """Two `serve --self-managed` replicas start at once, as the chart's ServiceAccount with only
    the chart's RBAC: exactly one CA exists, and the stored caBundle verifies both."""
    render = os.path.join(REPO, "tests", "helm", "render-for-apiserver.sh")
    out = os.path.join(WORK, "chart-self-managed.yaml")
    ports = free_ports(4)
    env = dict(os.environ, TLS_MODE="selfManaged")
    subprocess.run([render, out, "--set", f"webhook.url=https://127.0.0.1:{ports[0]}/mutate",
                    "--set", "deployment.enabled=false"], check=True, capture_output=True, env=env)
    docs = [d for d in yaml.safe_load_all(open(out)) if d]
    mwc = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
    role = next(d for d in docs if d["kind"] == "Role")
    ca_secret = next(r["resourceNames"][0] for r in role["rules"] if r.get("resourceNames"))
    if any("caBundle" in w["clientConfig"] for w in mwc["webhooks"]):
        raise AssertionError("selfManaged mode must not render a caBundle")
    for w in mwc["webhooks"]:
        w["namespaceSelector"] = {"matchLabels": {"self-managed-e2e": "yes"}}
    kubectl("create", "namespace", "migration-injector", check=False)
    kubectl("apply", "-n", "migration-injector", "-f", "-", input=yaml.safe_dump_all(docs))
    kubectl("create", "namespace", "self-managed")
    kubectl("label", "namespace", "self-managed", "self-managed-e2e=yes")

    restricted = os.path.join(WORK, "kubeconfig-injector")
    open(restricted, "w").write(open(os.environ["KUBECONFIG"]).read().replace(
        "token: e2e-admin-token", "token: e2e-injector-token"))
    # Least privilege: the ServiceAccount cannot read other Secrets.
    kubectl("create", "secret", "generic", "unrelated", "-n", "migration-injector", "--from-literal=a=b")
    p = subprocess.run(["kubectl", "--kubeconfig", restricted, "get", "secret", "unrelated",
                        "-n", "migration-injector"], capture_output=True, text=True)
    if p.returncode == 0 or "forbidden" not in p.stderr.lower():
        raise AssertionError(f"the ServiceAccount could read an unrelated Secret: {p.stderr!r}")

    procs = []
    for port, admin in ((ports[0], ports[1]), (ports[2], ports[3])):
        log = open(os.path.join(WORK, f"self-managed-{port}.log"), "w")
        procs.append((port, admin, subprocess.Popen(
            [BIN, "serve", "--self-managed", "--namespace", "migration-injector",
             "--service-name", "migration-injector", "--ca-secret-name", ca_secret,
             "--webhook-config-name", mwc["metadata"]["name"], "--cert-ips", "127.0.0.1",
             "--self-managed-check-interval", "1", "--shutdown-delay-seconds", "0",
             "--pod-name", f"replica-{port}",
             "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"],
            stdout=log, stderr=log, env=dict(os.environ, KUBECONFIG=restricted))))
    try:
        for port, admin, proc in procs:
            for _ in range(100):
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1).status == 200:
                        break
                except OSError:
                    if proc.poll() is not None:
                        raise AssertionError(f"self-managed replica on {port} exited: "
                                             + open(os.path.join(WORK, f"self-managed-{port}.log")).read())
                    time.sleep(0.1)
        secret = get("secret", ca_secret, ns="migration-injector")
        ca_pem = base64.b64decode(secret["data"]["ca.crt"]).decode()
        stored = get("mutatingwebhookconfiguration", mwc["metadata"]["name"], ns="default")
        for w in stored["webhooks"]:
            eq(pem_ders(w["clientConfig"].get("caBundle")), pem_ders(ca_pem), "caBundle = the one shared CA")
        verify_served_by(ca_pem, [port for port, _, _ in procs])
        time.sleep(1)
        apply(guide_deployment("self-managed"), ns="self-managed")
        check_guide_injection(get("deployment", "self-managed", ns="self-managed")["spec"]["template"]["spec"])
        # Someone resets the caBundle (a `kubectl replace`, an old manifest): the replicas put it back.
        name = mwc["metadata"]["name"]
        kubectl("patch", "mutatingwebhookconfiguration", name, "--type=json",
                "-p", json.dumps([{"op": "remove", "path": "/webhooks/0/clientConfig/caBundle"}]))
        for _ in range(50):
            stored = get("mutatingwebhookconfiguration", name, ns="default")
            if stored["webhooks"][0]["clientConfig"].get("caBundle"):
                break
            time.sleep(0.2)
        eq(pem_ders(stored["webhooks"][0]["clientConfig"].get("caBundle")), pem_ders(ca_pem),
           "caBundle restored by the replicas")
        # The CA Secret is deleted while admissions run: one replica creates a new CA, the other
        # adopts it; the caBundle holds both until both serve the new one, then only the new one.
        # Not one admission fails.
        with AdmissionLoad("self-managed") as load:
            time.sleep(1)
            kubectl("delete", "secret", ca_secret, "-n", "migration-injector")
            both_seen = False
            for _ in range(100):
                time.sleep(0.3)
                if not exists("secret", ca_secret, ns="migration-injector"):
                    continue
                new_pem = base64.b64decode(get("secret", ca_secret, ns="migration-injector")["data"]["ca.crt"]).decode()
                bundle = pem_ders(get("mutatingwebhookconfiguration", name, ns="default")["webhooks"][0]["clientConfig"].get("caBundle"))
                both_seen |= bundle == pem_ders(new_pem) | pem_ders(ca_pem)
                if new_pem != ca_pem and bundle == pem_ders(new_pem):
                    break
            else:
                raise AssertionError("the replicas did not converge on a new CA")
            time.sleep(3)  # more admissions after the switch
        if load.failed or load.ok < 10:
            raise AssertionError(f"CA replacement under load: {load.ok} admitted, {load.failed} failed: {load.errors[:3]}")
        print(f"     CA re-created under load: {load.ok} admissions, 0 failed; old and new CA overlapped: {both_seen}")
        if not both_seen:
            raise AssertionError("the caBundle never held the old and the new CA together")
        eq(pem_ders(get("mutatingwebhookconfiguration", name, ns="default")["webhooks"][0]["clientConfig"].get("caBundle")),
           pem_ders(new_pem), "caBundle stays on the new CA")
        verify_served_by(new_pem, [port for port, _, _ in procs])
        # A CA Secret that is not a CA (a serving certificate) is refused loudly; the replicas
        # keep serving what the caBundle trusts, and a new replica is not ready and says why.
        leaf_dir = os.path.join(WORK, "not-a-ca")
        subprocess.run([BIN, "certs", "generate", "--out", leaf_dir], check=True, capture_output=True)
        kubectl("delete", "secret", ca_secret, "-n", "migration-injector")
        kubectl("create", "secret", "generic", ca_secret, "-n", "migration-injector",
                f"--from-file=ca.crt={leaf_dir}/tls.crt", f"--from-file=ca.key={leaf_dir}/tls.key")
        with AdmissionLoad("self-managed") as load:
            time.sleep(3)
        if load.failed or load.ok < 5:
            raise AssertionError(f"bad CA Secret: {load.ok} admitted, {load.failed} failed: {load.errors[:3]}")
        logs = open(os.path.join(WORK, f"self-managed-{procs[0][0]}.log")).read()
        if "is not a CA certificate" not in logs:
            raise AssertionError("the refused CA Secret was not reported in the log")
        late_port, late_admin = free_ports(2)
        late_log = open(os.path.join(WORK, "self-managed-late.log"), "w")
        late = subprocess.Popen(
            [BIN, "serve", "--self-managed", "--namespace", "migration-injector",
             "--service-name", "migration-injector", "--ca-secret-name", ca_secret,
             "--webhook-config-name", name, "--cert-ips", "127.0.0.1",
             "--self-managed-check-interval", "1", "--shutdown-delay-seconds", "0", "--pod-name", "late",
             "--listen", f"127.0.0.1:{late_port}", "--admin-listen", f"127.0.0.1:{late_admin}"],
            stdout=late_log, stderr=late_log, env=dict(os.environ, KUBECONFIG=restricted))
        procs.append((late_port, late_admin, late))
        reason = ""
        for _ in range(50):
            time.sleep(0.2)
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{late_admin}/readyz", timeout=1)
                raise AssertionError("a replica became ready with a CA Secret that is not a CA")
            except urllib.error.HTTPError as e:
                reason = e.read().decode()
                break
            except OSError:
                continue
        if "is not a CA certificate" not in reason:
            raise AssertionError(f"readiness does not say why: {reason!r}")
    finally:
        for _, _, proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)


def s14_check_diagnoses():
    """`migration-injector check`: a healthy setup passes; each broken piece fails with its own
    line and a non-zero exit."""
    def check(*args):
        p = subprocess.run([BIN, "check", "--webhook-config-name", "migration-injector-e2e", *args],
                           capture_output=True, text=True)
        return p.returncode, p.stdout + p.stderr

    def fails_with(result, needle, what):
        rc, out = result
        lines = [l for l in out.splitlines() if l.startswith("[FAIL]")]
        if rc == 0 or not any(needle in l for l in lines):
            raise AssertionError(f"{what}: exit {rc}, no [FAIL] line with {needle!r}:\n{out}")
        return lines

    def namespace(name, labels=None):
        kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels or {}}}))

    def secret(ns):
        kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "atlas-project"},
            "stringData": {"atlas.hcl": 'env "k8s" {}'}}))

    # Earlier scenarios swap webhook configurations: start from the e2e one, as installed.
    kubectl("apply", "-f", "-", input=json.dumps(webhook_configuration()))
    time.sleep(1.5)
    namespace("check-ok")
    secret("check-ok")
    rc, out = check("-n", "check-ok")
    eq(rc, 0, f"healthy install passes:\n{out}")
    if "[FAIL]" in out or out.count("[ok]") < 4:
        raise AssertionError(f"healthy install: expected four [ok] lines:\n{out}")

    namespace("check-nosecret")
    lines = fails_with(check("-n", "check-nosecret"), "Secret check-nosecret/atlas-project does not exist",
                       "missing Secret")
    eq(len(lines), 1, "only the Secret check fails")

    namespace("check-excluded", {"migrations.io/injection": "disabled"})
    secret("check-excluded")
    fails_with(check("-n", "check-excluded"), "namespaceSelector excludes namespace check-excluded",
               "excluded namespace")

    bad = guide_deployment("check-bad", {"migrations.io/pull-policy": "Sometimes"})
    path = os.path.join(WORK, "check-bad.json")
    open(path, "w").write(json.dumps(bad))
    fails_with(check("-n", "check-ok", "-f", path), 'annotation migrations.io/pull-policy="Sometimes"',
               "invalid annotation")

    # A live Deployment created while its namespace was excluded: not injected; check says why.
    apply(guide_deployment("check-old-app"), ns="check-excluded")
    kubectl("label", "namespace", "check-excluded", "migrations.io/injection-")
    time.sleep(1)
    lines = fails_with(check("-n", "check-excluded", "deployment/check-old-app"),
                       "created before the webhook was in place", "live workload without the injection")
    eq(len(lines), 1, "only the live-object check fails")

    # A caBundle that does not match the serving certificate.
    other = subprocess.run([BIN, "certs", "generate", "--out", os.path.join(WORK, "other-ca")],
                           capture_output=True, text=True, check=True).stdout.strip()
    def set_bundle(bundle):
        kubectl("patch", "mutatingwebhookconfiguration", "migration-injector-e2e", "--type=json", "-p",
                json.dumps([{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle}]))
        time.sleep(1.5)
    set_bundle(other)
    try:
        fails_with(check("-n", "check-ok"), "does not trust the webhook's certificate", "wrong caBundle")
    finally:
        set_bundle(CA_BUNDLE)
    eq(check("-n", "check-ok")[0], 0, "passes again with the right caBundle")
    # A live workload that was injected passes every check, the live one included.
    apply(guide_deployment("check-live-app"), ns="check-ok")
    rc, out = check("-n", "check-ok", "deployment/check-live-app")
    eq(rc, 0, f"a live injected Deployment passes:\n{out}")
    if "carries the injection" not in out:
        raise AssertionError(f"no line about the live object's injection:\n{out}")


def s15_tls_mode_switch_keeps_the_old_ca():
    """Switching TLS modes with `helm upgrade` never leaves the old pods' CA out of the caBundle:
    helm -> selfManaged keeps the live caBundle (it used to be removed by helm's three-way merge),
    the self-managed replica adds its CA beside the old one; selfManaged -> helm puts the new CA
    first and keeps the live ones for that upgrade; the next upgrade drops them. helm ->
    existingSecret does the same with the user's CA (certs/dev-certs.sh), and refuses the Secret
    helm mode generated (Helm deletes it on that upgrade); existingSecret -> selfManaged keeps it."""
    helm = subprocess.run([os.path.join(REPO, "tests", "tools", "install-helm.sh")],
                          check=True, capture_output=True, text=True).stdout.strip()
    ns = release = "mi-switch"
    chart = os.path.join(REPO, "charts", "migration-injector")

    def upgrade(mode, *extra, check=True):
        # optIn with no namespace opted in: the release's webhook covers nothing in this e2e.
        return subprocess.run([helm, "upgrade", "--install", release, chart, "-n", ns, "--create-namespace",
                               "--set", f"tls.mode={mode}", "--set", "webhook.namespaceSelectorMode=optIn",
                               "--set", "webhook.failurePolicy=Ignore", "--wait=false", *extra],
                              check=check, capture_output=True, text=True)

    def mwc():
        items = json.loads(kubectl("get", "mutatingwebhookconfiguration", "-l",
                                   f"app.kubernetes.io/instance={release}", "-o", "json").stdout)["items"]
        eq(len(items), 1, "one webhook configuration in the release")
        return items[0]

    def bundle():
        return pem_ders(mwc()["webhooks"][0]["clientConfig"].get("caBundle"))

    def render(mode):
        # helm template --dry-run=server: lookup reads the live cluster, nothing is applied (no
        # cert-manager here, so its kinds could not be installed).
        out = subprocess.run([helm, "template", release, chart, "-n", ns, "--dry-run=server",
                              "--set", f"tls.mode={mode}", "--set", "webhook.namespaceSelectorMode=optIn"],
                             check=True, capture_output=True, text=True).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    upgrade("helm")
    helm_ca = bundle()
    eq(len(helm_ca), 1, "helm mode: its CA")
    # helm -> certManager: the live caBundle is rendered (helm's merge would otherwise remove it
    # before cainjector writes cert-manager's CA), and cert-manager gets a Secret of its own.
    docs = render("certManager")
    cm_mwc = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
    eq(pem_ders(cm_mwc["webhooks"][0]["clientConfig"].get("caBundle")), helm_ca,
       "helm -> certManager renders the live caBundle")
    if "cert-manager.io/inject-ca-from" not in cm_mwc["metadata"].get("annotations", {}):
        raise AssertionError("certManager mode without the cainjector annotation")
    helm_secret = next(d for d in render("helm") if d["kind"] == "Secret")["metadata"]["name"]
    cm_secrets = {d["spec"]["secretName"] for d in docs if d["kind"] == "Certificate"}
    if helm_secret in cm_secrets:
        raise AssertionError(f"cert-manager would write into helm mode's Secret {helm_secret}")
    upgrade("selfManaged")
    eq(bundle(), helm_ca, "helm -> selfManaged keeps the live caBundle")
    env = {e["name"]: e.get("value") for e in
           get("deployment", mwc()["webhooks"][0]["clientConfig"]["service"]["name"], ns=ns)
           ["spec"]["template"]["spec"]["containers"][0]["env"]}
    port, admin = free_ports(2)
    log = open(os.path.join(WORK, "mode-switch.log"), "w")
    replica = subprocess.Popen(
        [BIN, "serve", "--self-managed", "--namespace", ns, "--service-name", env["MIGRATION_INJECTOR_SERVICE_NAME"],
         "--ca-secret-name", env["MIGRATION_INJECTOR_CA_SECRET_NAME"],
         "--webhook-config-name", env["MIGRATION_INJECTOR_WEBHOOK_CONFIG_NAME"],
         "--self-managed-check-interval", "1", "--shutdown-delay-seconds", "0", "--pod-name", "switch-0",
         "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"], stdout=log, stderr=log)
    try:
        for _ in range(50):
            time.sleep(0.3)
            if len(bundle()) == 2:
                break
        else:
            raise AssertionError(f"the self-managed replica did not add its CA beside the old one: {len(bundle())}")
        if not helm_ca <= bundle():
            raise AssertionError("the old pods' CA left the caBundle while they may still serve")
        time.sleep(3)  # several checks: the old CA stays for the rollout, not one check
        eq(len(bundle()), 2, "old and new CA while the old pods may still serve")
        self_ca = bundle() - helm_ca
        # Back to helm while the self-managed replica still runs (as during the rollout): the
        # chart puts the new helm CA first, and the replica's checks do not remove it.
        upgrade("helm")
        after = bundle()
        if not (self_ca <= after and len(after - self_ca - helm_ca) == 1):
            raise AssertionError("selfManaged -> helm: the new CA and the live ones are expected together")
        new_helm = after - self_ca - helm_ca
        time.sleep(3)
        if not (new_helm | self_ca) <= bundle():
            raise AssertionError("a self-managed replica removed the new helm CA during the switch back")
    finally:
        replica.send_signal(signal.SIGTERM)
        replica.wait(timeout=15)
    upgrade("helm")
    eq(bundle(), new_helm, "the next upgrade keeps only the current CA")

    # helm -> existingSecret. The Secret tls.mode=helm generated is the release's own: Helm would
    # delete it on the very upgrade that makes the pods mount it, so the chart refuses it by name.
    svc = mwc()["webhooks"][0]["clientConfig"]["service"]["name"]
    refused = upgrade("existingSecret", "--set", f"tls.existingSecret={svc}-tls",
                      "--set", f"tls.caBundle={base64.b64encode(b'x').decode()}", check=False)
    if refused.returncode == 0 or "Helm deletes it when the release leaves helm mode" not in refused.stderr:
        raise AssertionError(f"existingSecret naming the helm-mode Secret was not refused: {refused.stderr}")
    eq(bundle(), new_helm, "a refused upgrade changes nothing")
    # The user's own certificate, made as certs/README.md says.
    out = os.path.join(WORK, "byo-certs")
    subprocess.run([os.path.join(REPO, "certs", "dev-certs.sh"), ns, svc, out], check=True, capture_output=True,
                   env={**os.environ, "MIGRATION_INJECTOR_BIN": BIN, "FORCE": "1"})
    kubectl("apply", "-f", os.path.join(out, "secret.yaml"))
    byo_bundle = open(os.path.join(out, "cabundle")).read().strip()
    byo_ca = pem_ders(byo_bundle)
    upgrade("existingSecret", "--set", f"tls.existingSecret={svc}-serving-tls", "--set", f"tls.caBundle={byo_bundle}")
    eq(bundle(), byo_ca | new_helm, "helm -> existingSecret: the user's CA and the live one for the upgrade")
    if exists("secret", f"{svc}-tls", ns=ns):
        raise AssertionError("the helm-mode Secret outlived the switch (Helm should delete it)")
    upgrade("existingSecret", "--set", f"tls.existingSecret={svc}-serving-tls", "--set", f"tls.caBundle={byo_bundle}")
    eq(bundle(), byo_ca, "the next upgrade keeps only the user's CA")
    # existingSecret -> selfManaged: the live caBundle stays until a replica adds its CA.
    upgrade("selfManaged", "--set", "tls.existingSecret=", "--set", "tls.caBundle=")
    eq(bundle(), byo_ca, "existingSecret -> selfManaged keeps the live caBundle")
    subprocess.run([helm, "uninstall", release, "-n", ns], check=True, capture_output=True)


def s16_replicas_keep_the_ca_bundle_for_files():
    """`serve --manage-ca-bundle` with certificate files (what cert-manager or an existing Secret
    mounts): the replica adds the CA of its files beside the live one (another mode's, kept),
    and when the files change to a certificate of a new CA it serves it only once the caBundle
    holds that CA; the retired CA then leaves, the other mode's stays for its ten minutes."""
    helm = subprocess.run([os.path.join(REPO, "tests", "tools", "install-helm.sh")],
                          check=True, capture_output=True, text=True).stdout.strip()
    ns = release = "mi-files"
    chart = os.path.join(REPO, "charts", "migration-injector")
    subprocess.run([helm, "upgrade", "--install", release, chart, "-n", ns, "--create-namespace",
                    "--set", "tls.mode=helm", "--set", "webhook.namespaceSelectorMode=optIn",
                    "--set", "webhook.failurePolicy=Ignore", "--set", "deployment.enabled=false", "--wait=false"],
                   check=True, capture_output=True, text=True)
    items = json.loads(kubectl("get", "mutatingwebhookconfiguration", "-l",
                               f"app.kubernetes.io/instance={release}", "-o", "json").stdout)["items"]
    mwc_name = items[0]["metadata"]["name"]

    def bundle():
        return pem_ders(get("mutatingwebhookconfiguration", mwc_name)["webhooks"][0]["clientConfig"].get("caBundle"))

    helm_ca = bundle()
    eq(len(helm_ca), 1, "helm mode: its CA")

    def generate(name):
        out = os.path.join(WORK, f"files-{name}")
        subprocess.run([BIN, "certs", "generate", "--service", "files", "--namespace", ns, "--out", out,
                        "--ip", "127.0.0.1", "--force"], check=True, capture_output=True)
        return out

    def install(src, dst):
        # As kubelet updates a Secret volume: the new files appear at once (rename).
        os.makedirs(dst, exist_ok=True)
        for f in ("ca.crt", "tls.crt", "tls.key"):
            tmp = os.path.join(dst, f".{f}.tmp")
            with open(os.path.join(src, f), "rb") as i, open(tmp, "wb") as o:
                o.write(i.read())
            os.replace(tmp, os.path.join(dst, f))

    served_dir = os.path.join(WORK, "files-served")
    first, second = generate("a"), generate("b")
    install(first, served_dir)
    ca_a = pem_ders(open(os.path.join(first, "ca.crt")).read())
    ca_b = pem_ders(open(os.path.join(second, "ca.crt")).read())
    port, admin = free_ports(2)
    log = open(os.path.join(WORK, "files-replica.log"), "w")
    replica = subprocess.Popen(
        [BIN, "serve", "--tls-cert-file", os.path.join(served_dir, "tls.crt"),
         "--tls-key-file", os.path.join(served_dir, "tls.key"), "--tls-ca-file", os.path.join(served_dir, "ca.crt"),
         "--manage-ca-bundle", "--webhook-config-name", mwc_name, "--pod-name", "files-0",
         "--self-managed-check-interval", "1", "--cert-reload-interval", "1", "--shutdown-delay-seconds", "0",
         "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"], stdout=log, stderr=log)

    def ready():
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1).status == 200
        except (urllib.error.URLError, OSError):
            return False

    def served_ca():
        leaf = ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", port), timeout=2))
        return "a" if leaf in served_a else "b" if leaf in served_b else "?"

    served_a = pem_ders(open(os.path.join(first, "tls.crt")).read())
    served_b = pem_ders(open(os.path.join(second, "tls.crt")).read())
    try:
        for _ in range(60):
            time.sleep(0.25)
            if ready():
                break
        else:
            raise AssertionError("the replica never became ready: " + open(os.path.join(WORK, "files-replica.log")).read()[-2000:])
        eq(bundle(), helm_ca | ca_a, "the files' CA added beside the live one")
        # The files change to a certificate of a new CA: it is served only once trusted.
        install(second, served_dir)
        seen_b = False
        for _ in range(80):
            now = served_ca()
            trusted = bundle()
            if now == "b":
                if not ca_b <= trusted:
                    raise AssertionError("the replica served a certificate of a CA the caBundle does not hold")
                seen_b = True
                break
            time.sleep(0.1)
        if not seen_b:
            raise AssertionError("the replica never took the new certificate")
        for _ in range(40):
            if bundle() == helm_ca | ca_b:
                break
            time.sleep(0.25)
        eq(bundle(), helm_ca | ca_b, "the retired CA left; the other mode's CA stays for its ten minutes")
        if not ready():
            raise AssertionError("not ready after the rotation")
        # A certificate the caBundle cannot trust (its CA is not the CA file's) is never served.
        third = generate("c")
        stray = os.path.join(WORK, "files-stray")
        install(second, stray)
        for f in ("tls.crt", "tls.key"):
            with open(os.path.join(third, f), "rb") as i, open(os.path.join(stray, f), "wb") as o:
                o.write(i.read())
        install(stray, served_dir)
        time.sleep(4)
        eq(served_ca(), "b", "a certificate of a CA the caBundle lacks is not served")
        if not ready():
            raise AssertionError("not ready while keeping the trusted certificate")
        eq(bundle(), helm_ca | ca_b, "the caBundle is unchanged by an untrusted certificate")
        # Readiness follows the webhook configuration: gone, the replica is not ready.
        kubectl("delete", "mutatingwebhookconfiguration", mwc_name)
        for _ in range(40):
            if not ready():
                break
            time.sleep(0.25)
        else:
            raise AssertionError("still ready with its webhook configuration deleted")
    finally:
        replica.send_signal(signal.SIGTERM)
        replica.wait(timeout=15)
    subprocess.run([helm, "uninstall", release, "-n", ns], check=True, capture_output=True)


def main():
    webhook = Webhook()
    webhook.start()
    kubectl("apply", "-f", "-", input=json.dumps(webhook_configuration()))
    time.sleep(1)  # the API server picks up new webhook configurations asynchronously
    scenarios = [
        ("1 guide Deployment", s1_guide_deployment),
        ("2 kubectl create deployment; existing init containers and volumes", s2_create_deployment_and_existing_init),
        ("3 UPDATE: image change, re-apply, opt-out", s3_updates),
        ("4 every override; StatefulSet, Job, CronJob, DaemonSet, Pod", s4_overrides_and_kinds),
        ("5 bad annotations are refused and nothing is stored", s5_bad_annotations),
        ("6 --dry-run=server and --server-side", s6_dry_run_and_server_side),
        ("7 unannotated Deployments are stored unchanged", s7_unannotated_unchanged),
        ("8 webhook down with failurePolicy Fail, then back", lambda: s8_webhook_down(webhook)),
        ("9 kind e2e manifests pass server-side validation", s9_kind_manifests_valid),
        ("10 Helm chart (url mode) installs and mutates", s10_helm_chart_url_mode),
        ("11 controller-made copies of a template are left alone", s12_controller_copies_untouched),
        ("12 self-managed certificates: two replicas race, one CA", s11_self_managed_replicas_race),
        ("13 the chart's own Deployment installs and upgrades while the webhook is down",
         lambda: s13_own_upgrade_while_down(webhook)),
        ("14 migration-injector check diagnoses each broken piece", s14_check_diagnoses),
        ("15 TLS mode switches keep the old pods' CA trusted", s15_tls_mode_switch_keeps_the_old_ca),
        ("16 replicas keep the caBundle for certificate files (--manage-ca-bundle)",
         s16_replicas_keep_the_ca_bundle_for_files),
    ]
    only = os.environ.get("E2E_ONLY")
    if only and not any(title.startswith(only + " ") for title, _ in scenarios):
        print(f"E2E_ONLY={only} matches no scenario")
        sys.exit(1)
    for title, fn in scenarios:
        if only and not title.startswith(only + " "):
            continue
        start = time.time()
        try:
            fn()
            print(f"ok   {title} ({time.time() - start:.1f}s)")
        except Exception as e:  # report every scenario, then fail
            FAILED.append(title)
            print(f"FAIL {title}: {e}")
    webhook.stop()
    if FAILED:
        print(f"{len(FAILED)} e2e scenario(s) failed")
        sys.exit(1)
    print("all e2e scenarios passed")


if __name__ == "__main__":
    main()
