#!/usr/bin/env python3
"""Static checks of tests/e2e/kind (run by check.sh): YAML files parse and are what run.sh and
the webhook expect, the migrations image and directory are consistent with run.sh.

Prints one line per check ("ok ..." / "FAIL ...") and exits 1 if any failed.
"""
import pathlib
import re
import sys

import yaml

HERE = pathlib.Path(__file__).resolve().parent.parent
failures = 0


def check(cond, what):
    global failures
    if cond:
        print(f"  ok   {what}")
    else:
        failures += 1
        print(f"  FAIL {what}")
    return cond


def load_all(rel):
    path = HERE / rel
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as err:
        check(False, f"{rel} parses as YAML: {err}")
        return []
    check(bool(docs), f"{rel} parses as YAML ({len(docs)} document(s))")
    return docs


def scripts_text():
    """run.sh and the cluster scenarios it sources (tests/e2e/cluster/*.sh, shared with the node e2e)."""
    return "\n".join(p.read_text() for p in [HERE / "run.sh", *sorted((HERE.parent / "cluster").glob("*.sh"))])


def run_sh_var(name):
    m = re.search(rf'^{name}="([^"$]*)"$', scripts_text(), re.M)
    return m.group(1) if m else None


# Kubernetes 1.20 serves these for the kinds used here (the manifests are validated against a
# v1.20 kube-apiserver elsewhere; this is a cheap first line).
API_1_20 = {("v1", "Service"), ("v1", "Secret"), ("apps/v1", "Deployment")}


def common_manifest_checks(rel, docs):
    for d in docs:
        ident = f"{rel}: {d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
        check((d.get("apiVersion"), d.get("kind")) in API_1_20, f"{ident} uses an API served by Kubernetes 1.20")
        check(bool((d.get("metadata") or {}).get("name")), f"{ident} has a name")
        check("namespace" not in (d.get("metadata") or {}), f"{ident} is namespace-agnostic (no metadata.namespace)")
        text = yaml.safe_dump(d)
        check("{{" not in text and "${" not in text, f"{ident} has no templating")
        if d.get("kind") == "Deployment":
            spec = d["spec"]
            labels = spec["template"]["metadata"]["labels"]
            sel = spec["selector"]["matchLabels"]
            check(all(labels.get(k) == v for k, v in sel.items()), f"{ident} selector matches its pod labels")


def by_kind(docs, kind, name):
    for d in docs:
        if d.get("kind") == kind and d["metadata"]["name"] == name:
            return d
    return None


def main():
    print("kind-config.yaml")
    docs = load_all("kind-config.yaml")
    if docs:
        cfg = docs[0]
        check(cfg.get("kind") == "Cluster" and cfg.get("apiVersion") == "kind.x-k8s.io/v1alpha4",
              "kind-config.yaml is a kind.x-k8s.io/v1alpha4 Cluster")
        roles = [n.get("role") for n in cfg.get("nodes", [])]
        check(roles.count("control-plane") == 1, f"exactly one control-plane node (nodes: {roles})")

    print("manifests/postgres.yaml")
    docs = load_all("manifests/postgres.yaml")
    common_manifest_checks("manifests/postgres.yaml", docs)
    dep, svc = by_kind(docs, "Deployment", "postgres"), by_kind(docs, "Service", "postgres")
    if check(dep is not None and svc is not None, "Deployment and Service named postgres"):
        pod = dep["spec"]["template"]
        c = pod["spec"]["containers"][0]
        check(c["image"] == "postgres:16-alpine", "official postgres:16-alpine image")
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        check(env.get("POSTGRES_DB") == "app" and env.get("POSTGRES_PASSWORD") == "pass",
              "database app, password as in the atlas.hcl URL")
        probe = (c.get("readinessProbe") or {}).get("exec", {}).get("command", [])
        check(bool(probe) and probe[0] == "pg_isready", "readiness probe runs pg_isready")
        check(all(pod["metadata"]["labels"].get(k) == v for k, v in svc["spec"]["selector"].items()),
              "Service selects the postgres pods")
        check(any(p["port"] == 5432 for p in svc["spec"]["ports"]), "Service port 5432")

    print("manifests/app.yaml")
    docs = load_all("manifests/app.yaml")
    common_manifest_checks("manifests/app.yaml", docs)
    app_name = run_sh_var("APP_DEPLOYMENT")
    app = by_kind(docs, "Deployment", app_name or "?")
    if check(app is not None, f"Deployment {app_name} (run.sh APP_DEPLOYMENT)"):
        ann = app["metadata"].get("annotations", {})
        check(ann.get("migrations.io/image") == run_sh_var("MIGRATIONS_IMAGE"),
              f"annotation migrations.io/image = run.sh MIGRATIONS_IMAGE ({ann.get('migrations.io/image')})")
        check(ann.get("migrations.io/pull-policy") == "Never", "annotation migrations.io/pull-policy = Never")
        spec = app["spec"]["template"]["spec"]
        check("initContainers" not in spec and "volumes" not in spec,
              "declares no init container or volume itself (the webhook must add them)")
        k, _, v = (run_sh_var("APP_SELECTOR") or "=").partition("=")
        check(app["spec"]["template"]["metadata"]["labels"].get(k) == v, f"pods carry run.sh APP_SELECTOR {k}={v}")

    print("manifests/secret.yaml")
    docs = load_all("manifests/secret.yaml")
    common_manifest_checks("manifests/secret.yaml", docs)
    sec = by_kind(docs, "Secret", "atlas-project")
    if check(sec is not None, "Secret atlas-project"):
        hcl = (sec.get("stringData") or {}).get("atlas.hcl", "")
        check(re.search(r'env\s+"k8s"\s*\{', hcl) is not None, 'atlas.hcl declares env "k8s"')
        check(re.search(r'url\s*=\s*"postgres://postgres:pass@postgres[.:][^"]*5432/app\?sslmode=disable"', hcl)
              is not None, "atlas.hcl URL points at the postgres Service")
        check('dir = "file:///migrations"' in hcl, "atlas.hcl migration dir is the image's /migrations")
    run_sh = scripts_text()
    check("'postgres://postgres:pass@%s:5432/%s?sslmode=disable' \"$1\" \"${2:-app}\"" in run_sh
          and '_host="postgres.$2.svc"' in run_sh and "db_host=dns" in run_sh,
          "run.sh (cluster/app.sh) generates the Secret URL postgres.<namespace>.svc")

    print("migrations/")
    mig = HERE / "migrations" / "migrations"
    names = sorted(p.name for p in mig.glob("*.sql"))
    check(all(re.fullmatch(r"\d{14}_[a-z0-9_]+\.sql", n) for n in names), f"migration file names {names}")
    versions = ",".join(n.split("_", 1)[0] for n in names)
    check(versions == run_sh_var("MIGRATION_VERSIONS"), f"versions {versions} = run.sh MIGRATION_VERSIONS")
    sql = "\n".join((mig / n).read_text() for n in names).lower()
    check('create table "users"' in sql and 'create table "posts"' in sql, "migrations create tables users and posts")

    dockerfile = (HERE / "migrations" / "Dockerfile").read_text()
    instrs = [ln.strip() for ln in dockerfile.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    froms = [i for i in instrs if i.upper().startswith("FROM ")]
    arg = re.search(r"^ARG ATLAS_IMAGE=(\S+)$", dockerfile, re.M)
    check(arg is not None and arg.group(1).startswith("arigaio/atlas:"), "base image ARG defaults to the official arigaio/atlas")
    check(arg is not None and arg.group(1) == run_sh_var_default("ATLAS_IMAGE"),
          "Dockerfile ARG ATLAS_IMAGE default = run.sh ATLAS_IMAGE default")
    check(froms == ["FROM ${ATLAS_IMAGE}"], f"single stage FROM ${{ATLAS_IMAGE}} ({froms})")
    users = [i.split(None, 1)[1] for i in instrs if i.upper().startswith("USER ")]
    last_user = users[-1] if users else ""
    m = re.fullmatch(r"(\d+)(?::(\d+))?", last_user)
    check(m is not None and int(m.group(1)) != 0, f"final USER is numeric and non-root ({last_user!r})")
    check(last_user == "65532:65532", "final USER 65532:65532 (what run.sh asserts)")
    check(any(i.startswith("COPY migrations/ /migrations/") for i in instrs), "COPY migrations/ to /migrations/")
    check('ENTRYPOINT ["/atlas"]' in instrs, "ENTRYPOINT is the atlas binary (the webhook sets args only)")

    print(f"static checks: {failures} failed")
    return 1 if failures else 0


def run_sh_var_default(name):
    m = re.search(rf'^{name}="\$\{{{name}:-([^}}]*)\}}"$', scripts_text(), re.M)
    return m.group(1) if m else None


if __name__ == "__main__":
    sys.exit(main())
