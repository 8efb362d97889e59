#!/usr/bin/env python3
"""Evaluates the webhook's matchConditions CEL with cel-cpp (PyPI cel-expr-python), object and
oldObject declared dyn as the API server does, on objects of every supported shape, including
null object (DELETE) and null oldObject (CREATE).

Usage: check_cel.py RENDER.yaml   (exit 1 on a wrong answer or a compile/eval error)
"""
import sys

import yaml
from cel_expr_python import cel

IMG = {"migrations.io/image": "ghcr.io/x/migrations:1"}
TEMPLATE = {"template": {"metadata": {"annotations": IMG}, "spec": {"containers": []}}}
CASES = [
    ("Deployment, annotation on metadata", {"metadata": {"annotations": IMG}}, None, True),
    ("Deployment, annotation on pod template", {"metadata": {"name": "d"}, "spec": TEMPLATE}, None, True),
    ("CronJob, annotation on job template's pod template",
     {"metadata": {}, "spec": {"jobTemplate": {"spec": TEMPLATE}}}, None, True),
    ("Pod with the annotation", {"metadata": {"annotations": IMG}, "spec": {"containers": []}}, None, True),
    ("unannotated Deployment", {"metadata": {"name": "d"}, "spec": {"template": {"metadata": {"labels": {}}}}}, None, False),
    ("other annotations only", {"metadata": {"annotations": {"a": "b"}}}, None, False),
    ("no metadata at all", {}, None, False),
    ("CronJob without jobTemplate.spec", {"spec": {"jobTemplate": {}}}, None, False),
    ("UPDATE removing the annotation", {"metadata": {"annotations": {}}}, {"metadata": {"annotations": IMG}}, True),
    ("UPDATE, old pod template had it", {"metadata": {}}, {"spec": TEMPLATE}, True),
    ("UPDATE, neither has it", {"metadata": {}}, {"metadata": {}}, False),
    ("DELETE (object null), old had it", None, {"metadata": {"annotations": IMG}}, True),
    ("DELETE (object null), old without", None, {"metadata": {}}, False),
    ("both null", None, None, False),
]


def main():
    docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    mwc = next(d for d in docs if d.get("kind") == "MutatingWebhookConfiguration")
    conds = mwc["webhooks"][0].get("matchConditions") or []
    if len(conds) != 1:
        sys.exit(f"expected one matchCondition, found {len(conds)}")
    env = cel.NewEnv(variables={"object": cel.Type.DYN, "oldObject": cel.Type.DYN})
    prog = env.compile(conds[0]["expression"])
    failed = 0
    for name, obj, old, want in CASES:
        try:
            got = prog.eval(data={"object": obj, "oldObject": old}).value()
        except Exception as e:  # evaluation error = the guard is wrong
            got = f"error: {e}"
        ok = got is want
        print(f"    {'ok  ' if ok else 'FAIL'} CEL {name}: {got!r}")
        failed += not ok
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
