"""Mutation scenarios: what the API server stores for annotated (and unannotated) workloads of
every kind, on CREATE and UPDATE, refusals, dry runs and server-side apply, and the copies a
controller makes of an injected template."""

import copy
import json

from .helpers import IMAGE, apply, check_guide_injection, eq, exists, get, guide_deployment, init_named, kubectl


def s1_guide_deployment():
    apply(guide_deployment())
    d = get("deployment", "nginx-deployment")
    check_guide_injection(d["spec"]["template"]["spec"])
    eq([c["name"] for c in d["spec"]["template"]["spec"]["containers"]], ["nginx"], "app containers")


def s2_create_deployment_and_existing_init():
    created = json.loads(kubectl("create", "deployment", "plain", "--image=nginx:1.25",
                                 "--dry-run=client", "-o", "json").stdout)
    created["metadata"]["annotations"] = {"migrations.io/image": IMAGE}
    apply(created)
    spec = get("deployment", "plain")["spec"]["template"]["spec"]
    check_guide_injection(spec)
    eq([c["name"] for c in spec["initContainers"]], ["migrate"], "only migrate")

    d = guide_deployment("with-init")
    t = d["spec"]["template"]["spec"]
    t["initContainers"] = [{"name": "wait-for-db", "image": "busybox:1.36", "command": ["sh", "-c", "true"]}]
    t["volumes"] = [{"name": "cache", "emptyDir": {}}]
    apply(d)
    spec = get("deployment", "with-init")["spec"]["template"]["spec"]
    eq([c["name"] for c in spec["initContainers"]], ["wait-for-db", "migrate"], "init order")
    eq([v["name"] for v in spec["volumes"]], ["cache", "atlas-project"], "volumes")
    check_guide_injection(spec)


def s3_updates():
    d = guide_deployment("upd")
    apply(d)
    first = get("deployment", "upd")
    # Same manifest again: nothing changes, nothing duplicates.
    apply(d)
    again = get("deployment", "upd")
    eq(again["metadata"]["generation"], first["metadata"]["generation"], "generation after re-apply")
    eq(again["spec"], first["spec"], "spec after re-apply")
    # Image change: the injected container follows.
    d2 = copy.deepcopy(d)
    d2["metadata"]["annotations"]["migrations.io/image"] = "ghcr.io/repo/migrations:v0.2.0"
    apply(d2)
    spec = get("deployment", "upd")["spec"]["template"]["spec"]
    check_guide_injection(spec, "ghcr.io/repo/migrations:v0.2.0")
    # kubectl annotate (an UPDATE that does not come from apply) as well.
    kubectl("annotate", "deployment", "upd", "migrations.io/env=prod", "--overwrite")
    spec = get("deployment", "upd")["spec"]["template"]["spec"]
    eq(init_named(spec, "migrate")[0]["args"][-1], "prod", "env after annotate")
    kubectl("annotate", "deployment", "upd", "migrations.io/env-")
    # Opt-out: exactly the injected parts disappear.
    d3 = copy.deepcopy(d)
    del d3["metadata"]["annotations"]
    apply(d3)
    out = get("deployment", "upd")
    spec = out["spec"]["template"]["spec"]
    eq(spec.get("initContainers"), None, "initContainers after opt-out")
    eq(spec.get("volumes"), None, "volumes after opt-out")
    eq(out["spec"]["template"]["metadata"].get("annotations"), None, "template annotations after opt-out")
    eq([c["name"] for c in spec["containers"]], ["nginx"], "user containers kept")


def s4_overrides_and_kinds():
    overrides = {
        "migrations.io/secret": "prod-db", "migrations.io/volume-name": "db-config",
        "migrations.io/env": "prod", "migrations.io/mount-path": "/config",
        "migrations.io/config-file": "project.hcl", "migrations.io/pull-policy": "IfNotPresent",
        "migrations.io/container-name": "schema", "migrations.io/position": "first",
        "migrations.io/cpu-request": "0.1", "migrations.io/cpu-limit": "1",
        "migrations.io/memory-request": "64Mi", "migrations.io/memory-limit": "256Mi",
    }
    d = guide_deployment("overrides", overrides)
    d["spec"]["template"]["spec"]["initContainers"] = [{"name": "wait", "image": "busybox:1.36"}]
    apply(d)
    spec = get("deployment", "overrides")["spec"]["template"]["spec"]
    c = spec["initContainers"][0]
    eq(c["name"], "schema", "container-name + position first")
    eq(c["imagePullPolicy"], "IfNotPresent", "pull-policy")
    eq(c["args"], ["migrate", "apply", "-c", "file:///config/project.hcl", "--env", "prod"], "args")
    eq(c["resources"], {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}}, "resources")
    eq(c["volumeMounts"][0]["name"], "db-config", "volume-name")
    eq([v for v in spec["volumes"] if v["name"] == "db-config"][0]["secret"]["secretName"], "prod-db", "secret")
    # The API server canonicalised 0.1 to 100m; re-applying must not fight it.
    gen = get("deployment", "overrides")["metadata"]["generation"]
    apply(d)
    eq(get("deployment", "overrides")["metadata"]["generation"], gen, "generation after re-apply with quantities")

    d = guide_deployment("flyway", {"migrations.io/command": '["flyway"]', "migrations.io/args": '["migrate"]'})
    apply(d)
    c = init_named(get("deployment", "flyway")["spec"]["template"]["spec"], "migrate")[0]
    eq((c["command"], c["args"]), (["flyway"], ["migrate"]), "command/args")

    pod_spec = {"containers": [{"name": "app", "image": "app:1"}]}
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": "sts", "annotations": {"migrations.io/image": IMAGE}},
           "spec": {"serviceName": "sts", "selector": {"matchLabels": {"app": "sts"}},
                    "template": {"metadata": {"labels": {"app": "sts"}}, "spec": pod_spec}}}
    apply(sts)
    check_guide_injection(get("statefulset", "sts")["spec"]["template"]["spec"])
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "job", "annotations": {"migrations.io/image": IMAGE}},
           "spec": {"template": {"spec": {**pod_spec, "restartPolicy": "Never"}}}}
    apply(job)
    check_guide_injection(get("job", "job")["spec"]["template"]["spec"])
    # Job templates are immutable: a later annotation change is allowed, with a warning, unpatched.
    p = kubectl("annotate", "job", "job", "migrations.io/image=ghcr.io/repo/migrations:v9", "--overwrite")
    if "cannot change after creation" not in p.stderr:
        raise AssertionError(f"expected a warning on Job update, got {p.stderr!r}")
    check_guide_injection(get("job", "job")["spec"]["template"]["spec"])
    cron = {"apiVersion": "batch/v1beta1", "kind": "CronJob",
            "metadata": {"name": "cron", "annotations": {"migrations.io/image": IMAGE}},
            "spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": {
                "spec": {**pod_spec, "restartPolicy": "OnFailure"}}}}}}
    apply(cron)
    check_guide_injection(get("cronjob", "cron")["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet",
          "metadata": {"name": "ds", "annotations": {"migrations.io/image": IMAGE}},
          "spec": {"selector": {"matchLabels": {"app": "ds"}},
                   "template": {"metadata": {"labels": {"app": "ds"}}, "spec": pod_spec}}}
    apply(ds)
    check_guide_injection(get("daemonset", "ds")["spec"]["template"]["spec"])
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "pod", "annotations": {"migrations.io/image": IMAGE}}, "spec": pod_spec}
    apply(pod)
    check_guide_injection(get("pod", "pod")["spec"])


def s5_bad_annotations():
    cases = [
        ({"migrations.io/pull-policy": "Sometimes"},
         'annotation migrations.io/pull-policy="Sometimes" is not an image pull policy; fix: use Always, IfNotPresent or Never'),
        ({"migrations.io/image": "Not An Image"}, 'annotation migrations.io/image="Not An Image" is not a valid image reference'),
        ({"migrations.io/args": "migrate up"}, 'annotation migrations.io/args="migrate up" is not a JSON array of strings'),
    ]
    for i, (ann, message) in enumerate(cases):
        name = f"bad-{i}"
        p = apply(guide_deployment(name, ann), check=False)
        if p.returncode == 0 or message not in p.stderr:
            raise AssertionError(f"expected refusal with {message!r}, got rc={p.returncode} {p.stderr!r}")
        if exists("deployment", name):
            raise AssertionError(f"{name} was stored despite the denial")
    d = guide_deployment("clash")
    d["spec"]["template"]["spec"]["initContainers"] = [{"name": "migrate", "image": "mine:1"}]
    p = apply(d, check=False)
    if p.returncode == 0 or "migrations.io/container-name" not in p.stderr:
        raise AssertionError(f"expected clash denial, got {p.stderr!r}")


def s6_dry_run_and_server_side():
    p = apply(guide_deployment("dry"), "--dry-run=server", "-o", "json")
    check_guide_injection(json.loads(p.stdout)["spec"]["template"]["spec"])
    if exists("deployment", "dry"):
        raise AssertionError("dry-run stored the object")
    apply(guide_deployment("ssa"), "--server-side", "--field-manager=e2e")
    check_guide_injection(get("deployment", "ssa")["spec"]["template"]["spec"])
    apply(guide_deployment("ssa"), "--server-side", "--field-manager=e2e")
    spec = get("deployment", "ssa")["spec"]["template"]["spec"]
    eq(len(spec["initContainers"]), 1, "no duplicate after second server-side apply")


def s7_unannotated_unchanged():
    kubectl("create", "namespace", "opted-out")
    kubectl("label", "namespace", "opted-out", "migrations.io/injection=disabled")
    d = guide_deployment("plain-app")
    del d["metadata"]["annotations"]
    d["spec"]["template"]["spec"]["initContainers"] = [{"name": "wait", "image": "busybox:1.36"}]
    apply(d)
    apply(d, ns="opted-out")
    a = kubectl("get", "deployment", "plain-app", "-o", "json").stdout
    b = kubectl("get", "deployment", "plain-app", "-n", "opted-out", "-o", "json").stdout
    eq(json.dumps(json.loads(a)["spec"], sort_keys=True), json.dumps(json.loads(b)["spec"], sort_keys=True),
       "spec through the webhook vs. without it")


def s11_controller_copies_untouched():
    """A Deployment's ReplicaSet and that ReplicaSet's Pod carry the injected template (and the
    record) but not the opt-in; no controller-manager runs here, so create them as it would."""
    apply(guide_deployment("parent"))
    d = get("deployment", "parent")
    template = d["spec"]["template"]
    owner = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "parent",
              "uid": d["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": "parent-abc", "ownerReferences": owner, "labels": template["metadata"]["labels"]},
          "spec": {"replicas": 1, "selector": d["spec"]["selector"], "template": template}}
    kubectl("create", "-f", "-", input=json.dumps(rs))
    stored = get("replicaset", "parent-abc")
    eq(stored["spec"]["template"], template, "ReplicaSet template = its Deployment's")
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {**template["metadata"], "name": "parent-abc-1",
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "parent-abc",
                                             "uid": stored["metadata"]["uid"], "controller": True}]},
           "spec": template["spec"]}
    kubectl("create", "-f", "-", input=json.dumps(pod))
    stored_pod = get("pod", "parent-abc-1")
    eq([c["name"] for c in stored_pod["spec"]["initContainers"]], ["migrate"], "Pod keeps the injected container")
    eq(len(stored_pod["spec"]["volumes"]), 1, "Pod volumes")
