#!/usr/bin/env python3
"""Renders tests/e2e/kind/manifests/app.yaml (the guide's annotated app Deployment): the cluster
scenarios (tests/e2e/cluster/app.sh) render it once per run for the cluster and migration tool
(its template), then once per Deployment from that template (name, migrations image, replicas).

Only what differs changes: the name (and its labels/selector), the migrations image and its
pull-policy annotation, the tool's migrations.io/command and migrations.io/args annotations, the
app container's image, the database host its readiness probe checks, the replica count, and
extra annotations (migrations.io/run). An
option left out keeps what the input says; everything else is the input as written.
"""
import argparse
import json
import sys

import yaml


def render(d, a):
    """Applies the options in a to the Deployment d (in place)."""
    if a.name is not None:
        old = d["metadata"]["name"]
        for labels in (d["metadata"]["labels"], d["spec"]["selector"]["matchLabels"],
                       d["spec"]["template"]["metadata"]["labels"]):
            if labels.get("app.kubernetes.io/name") == old:
                labels["app.kubernetes.io/name"] = a.name
        d["metadata"]["name"] = a.name
    ann = d["metadata"]["annotations"]
    if a.image is not None:
        ann["migrations.io/image"] = a.image
    if a.pull_policy is not None:
        ann.pop("migrations.io/pull-policy", None)
        if a.pull_policy:
            ann["migrations.io/pull-policy"] = a.pull_policy
    for key, val in (("migrations.io/command", a.command), ("migrations.io/args", a.args)):
        if val:
            json.loads(val)  # must be valid JSON
            ann[key] = val
    for kv in a.annotation or []:
        key, _, val = kv.partition("=")
        ann[key] = val
    if a.replicas is not None:
        d["spec"]["replicas"] = a.replicas
    app = d["spec"]["template"]["spec"]["containers"][0]
    if a.app_image:
        app["image"] = a.app_image
    if a.db_host:
        cmd = app["readinessProbe"]["exec"]["command"]
        cmd[cmd.index("-h") + 1] = a.db_host
    return d


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest")
    p.add_argument("--name", help="the Deployment's name (and its app.kubernetes.io/name label)")
    p.add_argument("--image", help="migrations.io/image")
    p.add_argument("--pull-policy", help="migrations.io/pull-policy ('' removes it: the default, Always)")
    p.add_argument("--command", default="", help="migrations.io/command, a JSON array ('' for none)")
    p.add_argument("--args", default="", help="migrations.io/args, a JSON array ('' for none)")
    p.add_argument("--app-image", default="", help="image of the app container ('' keeps the input's)")
    p.add_argument("--db-host", default="", help="host the app's readiness probe checks ('' keeps the input's)")
    p.add_argument("--replicas", type=int, default=None)
    p.add_argument("--annotation", action="append", metavar="KEY=VALUE",
                   help="an annotation of the Deployment (repeatable), e.g. migrations.io/run=once")
    a = p.parse_args()
    with open(a.manifest) as f:
        d = yaml.safe_load(f)
    yaml.safe_dump(render(d, a), sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
