#!/usr/bin/env python3
"""Assertions on a `helm template` render.

Usage: check_render.py RENDER.yaml EXPR [EXPR ...]

Each EXPR is a Python expression evaluated against the render; it must be truthy. Names:
  docs              every non-empty YAML document
  kinds             sorted list of "Kind" of every document (with repeats)
  has(kind)         is there at least one object of that kind
  all_of(kind)      list of objects of that kind
  one(kind)         the single object of that kind (fails if 0 or >1)
  mwc, wh           the MutatingWebhookConfiguration and its first webhook (None if absent)
  resources         set of resources in wh.rules
  rule(res)         the rule naming resource `res`
  nsexpr            {key: (operator, values)} of wh.namespaceSelector.matchExpressions
  whs, pwh          every webhook of it; the pods webhook (name pods.*; None if absent)
  dep, pod, ctr     the webhook's Deployment (args serve), its pod spec and its first container
  ctl, ctlpod, ctlctr, ctlenv  the controller's Deployment (args controller), pod spec, container, env
  env               {name: value} of ctr.env, envnames the ordered names
  envvar            {name: EnvVar object} of ctr.env (for valueFrom)
  named(kind, name) the object of that kind and metadata.name
  rules_of(kind)    the rules of the single Role/ClusterRole, each with sorted lists
  secret_data(name) decoded data of a Secret
  cert_ok(ca_b64, crt_b64, dns)  openssl verifies crt against ca and its SANs include dns
Prints one line per expression; exits 1 if any is false or raises.
"""
import base64
import os
import subprocess
import sys
import tempfile

import yaml


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def build(docs):
    ns = {"docs": docs, "kinds": sorted(d.get("kind", "?") for d in docs)}

    def all_of(kind):
        return [d for d in docs if d.get("kind") == kind]

    def one(kind):
        objs = all_of(kind)
        if len(objs) != 1:
            raise AssertionError(f"expected exactly one {kind}, found {len(objs)}")
        return objs[0]

    ns.update(all_of=all_of, one=one, has=lambda k: bool(all_of(k)))
    mwcs = all_of("MutatingWebhookConfiguration")
    ns["mwc"] = mwcs[0] if mwcs else None
    wh = mwcs[0]["webhooks"][0] if mwcs else None
    ns["wh"] = wh
    ns["whs"] = mwcs[0]["webhooks"] if mwcs else []
    ns["pwh"] = next((w for w in ns["whs"] if w["name"].startswith("pods.")), None)
    rules = (wh or {}).get("rules") or []
    ns["resources"] = {r for rule in rules for r in rule["resources"]}

    def rule(res):
        found = [r for r in rules if res in r["resources"]]
        if len(found) != 1:
            raise AssertionError(f"expected one rule for {res}, found {len(found)}")
        return found[0]

    ns["rule"] = rule
    exprs = (((wh or {}).get("namespaceSelector") or {}).get("matchExpressions")) or []
    ns["nsexpr"] = {e["key"]: (e["operator"], e.get("values")) for e in exprs}
    def args_of(d):
        return d["spec"]["template"]["spec"]["containers"][0].get("args") or []
    deps = [d for d in all_of("Deployment") if args_of(d)[:1] != ["controller"]]
    dep = deps[0] if deps else None
    ctls = [d for d in all_of("Deployment") if args_of(d)[:1] == ["controller"]]
    ctl = ctls[0] if ctls else None
    ctlpod = ctl["spec"]["template"]["spec"] if ctl else None
    ctlctr = ctlpod["containers"][0] if ctlpod else None
    ns.update(ctl=ctl, ctlpod=ctlpod, ctlctr=ctlctr,
              ctlenv={e["name"]: e.get("value") for e in (ctlctr or {}).get("env") or []})
    pod = dep["spec"]["template"]["spec"] if dep else None
    ctr = pod["containers"][0] if pod else None
    ns.update(dep=dep, pod=pod, ctr=ctr)
    envlist = (ctr or {}).get("env") or []
    ns["env"] = {e["name"]: e.get("value") for e in envlist}
    ns["envnames"] = [e["name"] for e in envlist]
    ns["envvar"] = {e["name"]: e for e in envlist}

    def named(kind, name):
        found = [d for d in all_of(kind) if d["metadata"]["name"] == name]
        if len(found) != 1:
            raise AssertionError(f"expected one {kind} {name}, found {len(found)}")
        return found[0]

    def rules_of(kind):
        return [{k: sorted(v) if isinstance(v, list) else v for k, v in r.items()} for r in one(kind)["rules"]]

    ns.update(named=named, rules_of=rules_of)

    def secret_data(name):
        for s in all_of("Secret"):
            if s["metadata"]["name"] == name:
                return {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
        raise AssertionError(f"no Secret {name}")

    def cert_ok(ca_b64, crt_b64, dns):
        with tempfile.TemporaryDirectory() as tmp:
            ca, crt = os.path.join(tmp, "ca.crt"), os.path.join(tmp, "tls.crt")
            with open(ca, "wb") as f:
                f.write(base64.b64decode(ca_b64))
            with open(crt, "wb") as f:
                f.write(base64.b64decode(crt_b64))
            verify = subprocess.run(["openssl", "verify", "-CAfile", ca, crt], capture_output=True, text=True)
            if verify.returncode != 0:
                raise AssertionError(f"openssl verify failed: {verify.stdout}{verify.stderr}")
            text = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-ext", "subjectAltName"],
                                  capture_output=True, text=True, check=True).stdout
            missing = [d for d in dns if f"DNS:{d}" not in text]
            if missing:
                raise AssertionError(f"SANs {text.strip()!r} miss {missing}")
        return True

    ns.update(secret_data=secret_data, cert_ok=cert_ok)
    return ns


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, exprs = sys.argv[1], sys.argv[2:]
    ns = build(load(path))
    failed = 0
    for expr in exprs:
        try:
            # ns as globals, so that names resolve inside comprehensions too.
            ok = bool(eval(expr, dict(ns, __builtins__=__builtins__)))  # noqa: S307 (test helper)
            detail = ""
        except Exception as e:  # an assertion helper or a missing key: report, do not crash
            ok, detail = False, f"  ({type(e).__name__}: {e})"
        print(f"    {'ok  ' if ok else 'FAIL'} {expr}{detail}")
        failed += not ok
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
