#!/usr/bin/env python3
"""Print what the webhook should make of manifests/app.yaml: the Deployment with the injected
init container, volume and securityContext, and one Pod of it (check.sh --full creates these in a
bare kube-apiserver to test run.sh's assertions against real kubectl output).

Usage: fixtures.py POD_NAME [--no-security-context] [--mutated FILE]
  --mutated FILE  take the mutated Deployment from FILE (e.g. `migration-injector inject -f
                  manifests/app.yaml` output) instead of building it here from the spec
"""
import copy
import pathlib
import sys

import yaml

HERE = pathlib.Path(__file__).resolve().parent.parent

RESTRICTED = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    pod_name = argv[0]
    with_sc = "--no-security-context" not in argv[1:]
    if "--mutated" in argv[1:]:
        mutated = pathlib.Path(argv[argv.index("--mutated") + 1])
        dep = next(d for d in yaml.safe_load_all(mutated.read_text()) if d and d.get("kind") == "Deployment")
        spec = dep["spec"]["template"]["spec"]
        if not with_sc:
            for c in spec.get("initContainers", []):
                c.pop("securityContext", None)
        return emit(dep, pod_name)
    dep = yaml.safe_load((HERE / "manifests" / "app.yaml").read_text())
    ann = dep["metadata"]["annotations"]
    init = {
        "name": "migrate",
        "image": ann["migrations.io/image"],
        "imagePullPolicy": ann.get("migrations.io/pull-policy", "Always"),
        "args": ["migrate", "apply", "-c", "file:///etc/atlas/atlas.hcl", "--env", "k8s"],
        "volumeMounts": [{"name": "atlas-project", "mountPath": "/etc/atlas", "readOnly": True}],
    }
    if with_sc:
        init["securityContext"] = copy.deepcopy(RESTRICTED)
    spec = dep["spec"]["template"]["spec"]
    spec["volumes"] = [{"name": "atlas-project", "secret": {"secretName": "atlas-project"}}]
    spec["initContainers"] = [init]
    return emit(dep, pod_name)


def emit(dep, pod_name):
    spec = dep["spec"]["template"]["spec"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name, "labels": dep["spec"]["template"]["metadata"]["labels"]},
        "spec": copy.deepcopy(spec),
    }
    yaml.safe_dump_all([dep, pod], sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
