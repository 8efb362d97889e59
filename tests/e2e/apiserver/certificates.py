"""Certificates and the caBundle: `serve --self-managed` replicas racing for one CA (and the CA
re-created under load), the caBundle through the chart's TLS mode switches, and `serve
--manage-ca-bundle` with certificate files."""

import base64
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import yaml

from .helpers import (BIN, REPO, WORK, AdmissionLoad, apply, check_guide_injection, eq, exists, free_ports, get,
                      guide_deployment, kubectl, pem_ders, verify_served_by)


def s12_self_managed_replicas_race():
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
        # Replaced in one write: between a delete and a create, a replica (checking every second)
        # would re-create the missing Secret with a new CA of its own.
        bad = kubectl("create", "secret", "generic", ca_secret, "-n", "migration-injector",
                      f"--from-file=ca.crt={leaf_dir}/tls.crt", f"--from-file=ca.key={leaf_dir}/tls.key",
                      "--dry-run=client", "-o", "json").stdout
        kubectl("replace", "-f", "-", input=bad)
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
