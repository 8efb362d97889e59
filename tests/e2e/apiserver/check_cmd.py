"""`migration-injector check` against the real API server: a healthy setup passes, each broken
piece fails with its own line."""

import json
import os
import subprocess
import time

from .helpers import BIN, CA_BUNDLE, WORK, apply, eq, guide_deployment, kubectl, webhook_configuration


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
