"""Helpers of the scenarios against a real kube-apiserver: the kubectl client, reading back what
the API server stored, the assertion (eq), the webhook process, the e2e webhook configuration,
the guide's Deployment and the check of its injection, certificates, and an admission load.

The run context, read once from the environment tests/e2e/run.sh sets (read-only): E2E_WORK (the
run's directory, with the webhook's certificates and its caBundle), E2E_BIN (migration-injector),
E2E_REPO, E2E_WEBHOOK_PORT, E2E_ADMIN_PORT, and KUBECONFIG (the API server)."""

import base64
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request

WORK = os.environ["E2E_WORK"]
BIN = os.environ["E2E_BIN"]
REPO = os.environ["E2E_REPO"]
PORT = int(os.environ["E2E_WEBHOOK_PORT"])
ADMIN = int(os.environ["E2E_ADMIN_PORT"])
CA_BUNDLE = open(os.path.join(WORK, "cabundle")).read().strip()
IMAGE = "ghcr.io/repo/migrations:v0.1.2"
GUIDE_ARGS = ["migrate", "apply", "-c", "file:///etc/atlas/atlas.hcl", "--env", "k8s"]


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
