"""`migration-injector inject` against the real API server: for every fixture of
tests/fixtures/inject/, each workload document of inject's output is accepted by
`kubectl create --dry-run=server` whenever its input is, and the offline `inject` agrees with the
live webhook.

Each workload document is sent alone, three times, and the objects returned are compared once
what the server sets per request is dropped (API server defaults included in the comparison):
  1. the input as the user wrote it, through the run's webhook (scenarios.py registers it first);
  2. inject's output, through the webhook (which finds it already injected);
  3. inject's output in a namespace the webhook's namespaceSelector excludes: the output alone.
1 == 2 is inject agreeing with the live mutation; 2 == 3 shows the webhook had nothing left to
do, so inject's own result (not the webhook repairing it) is what matched. Besides, 3 carries the
init container of an annotated workload (inject's output, before any server, added exactly it) and
nothing is added to an unannotated one. A document whose input the API server refuses is skipped,
with the reason printed.
"""

import json
import os
import re
import subprocess

import yaml

from .helpers import BIN, REPO, WORK, eq, kubectl

FIXTURES = os.path.join(REPO, "tests", "fixtures", "inject")
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
# Set by the server on each request: never equal between two dry runs of the same object.
SERVER_SET = ("uid", "creationTimestamp", "resourceVersion", "managedFields", "generation", "selfLink")
# Every document goes to a namespace of its own, metadata.namespace dropped: the fixtures name
# namespaces they create themselves (install.yaml's `shop`) or none (then `default`, where earlier
# scenarios store Deployments whose names could collide with a fixture's), and a fixture's
# Namespace could carry labels that the webhook's namespaceSelector reads. Input and output are
# sent the same way, so the comparison is not affected.
NS = "inject-dry-run"
# The same without the webhook (its namespaceSelector excludes this label): what inject's output
# is on its own, API server defaults applied.
NS_NO_WEBHOOK = "inject-dry-run-no-webhook"


class KubectlLikeLoader(yaml.SafeLoader):
    """PyYAML's YAML 1.1 safe loader, brought to what kubectl's reader (go-yaml v2 through
    sigs.k8s.io/yaml) makes of plain scalars: `y`, `Y`, `n`, `N` are booleans too, timestamps and
    sexagesimals (`1:20`) stay strings. (kubectl itself cannot be the reader here: `kubectl create --dry-run=client`
    needs the kind served, and 1.20 serves no batch/v1 CronJob.)"""

    bool_values = {**yaml.SafeLoader.bool_values, "y": True, "n": False}


KubectlLikeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
KubectlLikeLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:y|Y|n|N)$"), list("yYnN"))
for _tag in ("int", "float"):
    KubectlLikeLoader.add_constructor(
        f"tag:yaml.org,2002:{_tag}",
        lambda loader, node, number=getattr(yaml.SafeLoader, f"construct_yaml_{_tag}"):
            loader.construct_scalar(node) if ":" in node.value else number(loader, node))


def read_objects(path):
    """The objects of a manifest file, one at a time: YAML documents (or JSON) split, `kind: List`
    flattened."""
    with open(path, encoding="utf-8-sig") as f:
        documents = [d for d in yaml.load_all(f, Loader=KubectlLikeLoader) if d is not None]
    objects = []
    for d in documents:
        objects.extend(d.get("items") or [] if d.get("kind") == "List" else [d])
    return objects


def template_spec(obj):
    """The pod spec of a workload object."""
    kind = obj["kind"]
    if kind == "Pod":
        return obj.get("spec", {})
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"].get("spec", {})
    return obj["spec"]["template"].get("spec", {})


def init_names(obj):
    return [c["name"] for c in template_spec(obj).get("initContainers") or []]


def injected_name(obj):
    """The init container `inject` and the webhook add to an annotated workload, else None."""
    annotations = obj["metadata"].get("annotations") or {}
    if "migrations.io/image" not in annotations:
        return None
    return annotations.get("migrations.io/container-name", "migrate")


def first_difference(a, b, path=""):
    """The first path (`.spec.template.spec.initContainers[0].image`) where a and b differ, with
    both values, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{path}.{key}", a.get(key, "<absent>"), b.get(key, "<absent>")
            found = first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        if len(a) != len(b):
            return f"{path} (length)", len(a), len(b)
        return None
    return None if a == b else (path or ".", a, b)


def normalized(returned):
    """An object returned by a dry run without what the server sets per request: SERVER_SET, and
    the uid wherever it is copied (a Job's controller-uid selector and labels). For a Job, also
    its own labels controller-uid and job-name: 1.20 defaults a Job's empty labels to its
    template's *map*, so the labels it then generates into the template show up in the Job's own
    labels too, but only when no webhook patch made the object be decoded anew (the output, which
    the webhook finds already injected) -- a quirk of the server, not a difference of the two."""
    uid = returned["metadata"].get("uid")

    def walk(v):
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return "<uid>" if uid and v == uid else v
    returned = walk(returned)
    for key in SERVER_SET + ("namespace",):  # the namespace: ours, one of two
        returned["metadata"].pop(key, None)
    if returned["kind"] == "Job":
        for key in ("controller-uid", "job-name"):
            (returned["metadata"].get("labels") or {}).pop(key, None)
    return returned


def dry_run(obj, validate=True, ns=NS):
    """`kubectl create --dry-run=server` of one object in ns: (normalized object returned, None)
    or (None, the refusal). kubectl validates the object against the server's OpenAPI schema
    first (1.20 has no server-side field validation), unless validate is False."""
    obj = json.loads(json.dumps(obj))
    obj["metadata"].pop("namespace", None)
    p = kubectl("create", "-n", ns, "--dry-run=server", f"--validate={str(validate).lower()}", "-o", "json",
                "-f", "-", input=json.dumps(obj), check=False)
    if p.returncode != 0:
        return None, p.stderr.strip()
    return normalized(json.loads(p.stdout)), None


def check_fixture(name):
    """Checks every workload of one fixture; returns (checked, skipped) counts."""
    path = os.path.join(FIXTURES, name)
    out_path = os.path.join(WORK, f"inject-{name}")
    with open(out_path, "w") as f:
        f.write(run_inject(path))
    inputs = [o for o in read_objects(path) if o.get("kind") in WORKLOADS]
    outputs = [o for o in read_objects(out_path) if o.get("kind") in WORKLOADS]
    eq([(o["kind"], o["metadata"]["name"]) for o in outputs], [(o["kind"], o["metadata"]["name"]) for o in inputs],
       f"{name}: the workloads of inject's output")
    checked = skipped = 0
    for before, after in zip(inputs, outputs):
        doc = f"{name}: {before['kind']}/{before['metadata']['name']}"
        want = injected_name(before)
        # inject's output alone: the init container of an annotated workload, nothing otherwise.
        added = [n for n in init_names(after) if n not in init_names(before)]
        eq(added, [want] if want else [], f"{doc}: init containers inject added")
        from_input, refused = dry_run(before)
        if refused and before["kind"] == "CronJob" and before["apiVersion"] == "batch/v1" \
                and 'no matches for kind "CronJob" in version "batch/v1"' in refused:
            # 1.20 serves CronJob as batch/v1beta1 only (batch/v1 came in 1.21), with the same
            # schema for what inject touches: both documents are sent as batch/v1beta1, which the
            # webhook's rules cover, rather than the fixture going unchecked.
            before, after = ({**o, "apiVersion": "batch/v1beta1"} for o in (before, after))
            doc += " (sent as batch/v1beta1: 1.20 serves no batch/v1 CronJob)"
            from_input, refused = dry_run(before)
        validate = True
        if refused and "error validating data" in refused:
            # kubectl's schema validation (1.20's OpenAPI) refuses a field newer than 1.20 (a native
            # sidecar's restartPolicy): the rule also holds for kubectl --validate=false, where the
            # API server itself judges and drops the unknown field from input and output alike.
            print(f"     note  {doc}: kubectl's validation refuses the input ({refused.splitlines()[0]}); "
                  "both sent with --validate=false")
            validate = False
            from_input, refused = dry_run(before, validate)
        if refused:
            print(f"     skip  {doc}: the API server refuses the input: {refused}")
            skipped += 1
            continue
        from_output, refused = dry_run(after, validate)
        if refused:
            raise AssertionError(f"{doc}: the API server accepts the input but refuses inject's output: {refused}")
        diff = first_difference(from_input, from_output)
        if diff:
            kept = os.path.join(WORK, f"dry-run-{name}-{before['metadata']['name']}")
            for suffix, returned in (("input", from_input), ("output", from_output)):
                with open(f"{kept}.{suffix}.json", "w") as f:
                    json.dump(returned, f, indent=2, sort_keys=True)
            raise AssertionError(f"{doc}: the dry runs of the input (through the webhook) and of inject's output "
                                 f"differ first at {diff[0]}:\n  input  {json.dumps(diff[1])}\n"
                                 f"  output {json.dumps(diff[2])}")
        # Without the webhook, inject's output is the same object: the webhook had nothing left
        # to do, so inject's own result (not the webhook repairing it) is what matched above.
        alone, refused = dry_run(after, validate, NS_NO_WEBHOOK)
        if refused:
            raise AssertionError(f"{doc}: inject's output is refused without the webhook: {refused}")
        diff = first_difference(from_output, alone)
        if diff:
            raise AssertionError(f"{doc}: the webhook still changes inject's output, first at {diff[0]}:\n"
                                 f"  through the webhook  {json.dumps(diff[1])}\n  output alone         "
                                 f"{json.dumps(diff[2])}")
        eq([n for n in init_names(alone) if n == want], [want] if want else [],
           f"{doc}: the injected init container in the object returned for inject's output alone")
        print(f"     ok    {doc}: dry runs of input and output (with and without the webhook) equal"
              + (f", init container {want}" if want else ", not annotated: nothing injected"))
        checked += 1
    return checked, skipped


def run_inject(path):
    """`migration-injector inject -f PATH`: its output (stdout); fails on a non-zero exit."""
    p = subprocess.run([BIN, "inject", "-f", path], capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"inject -f {path} exited {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def s17_inject_output_passes_dry_run():
    kubectl("create", "namespace", NS)
    kubectl("create", "namespace", NS_NO_WEBHOOK)
    kubectl("label", "namespace", NS_NO_WEBHOOK, "migrations.io/injection=disabled")
    checked = skipped = 0
    for name in sorted(os.listdir(FIXTURES)):
        c, s = check_fixture(name)
        checked, skipped = checked + c, skipped + s
    if not checked:
        raise AssertionError("no workload document was checked")
    print(f"     {checked} workload document(s) checked, {skipped} skipped (input refused)")
