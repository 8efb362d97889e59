#!/usr/bin/env python3
"""Lists the RBAC bindings that name a ServiceAccount, from `kubectl get clusterrolebindings,
rolebindings -A -o json` on stdin: one line per binding, "chart KIND NAME" when it belongs to the
Helm release (label app.kubernetes.io/instance), "OTHER KIND NAME" otherwise. Used by
assert_self_managed_certs (cluster/tls.sh): the webhook must have only the chart's RBAC.
"""
import argparse
import json
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("namespace", help="the ServiceAccount's namespace")
    p.add_argument("service_account")
    p.add_argument("release", help="the Helm release whose bindings are the chart's")
    a = p.parse_args()
    for b in json.load(sys.stdin)["items"]:
        if any(s.get("kind") == "ServiceAccount" and s.get("name") == a.service_account
               and s.get("namespace", b["metadata"].get("namespace")) == a.namespace
               for s in b.get("subjects") or []):
            mine = (b["metadata"].get("labels") or {}).get("app.kubernetes.io/instance") == a.release
            print(("chart" if mine else "OTHER"), b["kind"], b["metadata"]["name"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
