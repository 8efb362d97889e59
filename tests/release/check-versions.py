#!/usr/bin/env python3
"""Release metadata checks: one version everywhere, one supported Kubernetes range everywhere,
workflow actions pinned.

Usage: check-versions.py [--root DIR] [--tag vX.Y.Z]     all checks (and the tag = the version)
       check-versions.py [--root DIR] --notes X.Y.Z      print CHANGELOG.md's section of X.Y.Z
Env:   HELM (default: tests/tools/install-helm.sh under the root)

Versions (X.Y.Z): Cargo.toml `version` = Chart.yaml `version` = `appVersion` = the tag of the
image the chart renders by default (helm template) = the Dockerfile's `ARG VERSION` default; the
chart's image repository = the IMAGE release.yml pushes; README.md names the image
IMAGE:X.Y.Z, the chart's OCI location (release.yml's CHART_REPOSITORY) and `--version X.Y.Z`;
CHANGELOG.md (Keep a Changelog) has a section for X.Y.Z, or, until X.Y.Z is tagged,
[Unreleased]. With --tag, the tag must be vX.Y.Z and CHANGELOG.md must have `## [X.Y.Z] - date`.

Kubernetes range (1.MIN to 1.MAX): Chart.yaml `kubeVersion: ">=1.MIN.0-0"`; the kind matrix of
.github/workflows/e2e-kind.yml spans exactly 1.MIN to 1.MAX with at least one version without
matchConditions (< 1.30) and one with; README.md says "Kubernetes 1.MIN to 1.MAX" and the chart's
README "1.MIN to 1.MAX"; Cargo.toml's k8s-openapi feature v1_NN lies in the range.

Workflows: every `uses:` of a third-party action is pinned by a 40-hex commit SHA followed by a
`# vX...` comment.

Prints one line per check; exit status 1 if any failed.
"""
import argparse
import os
import re
import subprocess
import sys

import yaml

FAILED = []


def check(ok, what, detail=""):
    print(f"  {'ok  ' if ok else 'FAIL'} {what}{'' if ok else ': ' + detail}")
    if not ok:
        FAILED.append(what)


def read(root, path):
    with open(os.path.join(root, path)) as f:
        return f.read()


def cargo_field(cargo, section, key):
    m = re.search(rf"^\[{re.escape(section)}\]\s*$(.*?)(?=^\[|\Z)", cargo, re.M | re.S)
    if not m:
        return None
    f = re.search(rf'^{key}\s*=\s*"([^"]*)"', m.group(1), re.M)
    return f.group(1) if f else None


def changelog_section(changelog, name):
    """Text of `## [name]...` up to the next `## ` heading, or None."""
    m = re.search(rf"^## \[{re.escape(name)}\][^\n]*\n(.*?)(?=^## |\Z)", changelog, re.M | re.S)
    return m.group(0) if m else None


def render_image(root, helm):
    out = subprocess.run([helm, "template", "r", os.path.join(root, "charts", "migration-injector")],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    for doc in yaml.safe_load_all(out.stdout):
        if doc and doc.get("kind") == "Deployment":
            return doc["spec"]["template"]["spec"]["containers"][0]["image"]
    raise RuntimeError("no Deployment in the default render")


def minor(version):
    m = re.match(r"v?1\.(\d+)", version)
    return int(m.group(1)) if m else None


def check_versions(root, helm, tag):
    cargo = read(root, "Cargo.toml")
    chart = yaml.safe_load(read(root, "charts/migration-injector/Chart.yaml"))
    values = yaml.safe_load(read(root, "charts/migration-injector/values.yaml"))
    release = yaml.safe_load(read(root, ".github/workflows/release.yml"))
    readme = read(root, "README.md")
    changelog = read(root, "CHANGELOG.md")

    version = cargo_field(cargo, "package", "version")
    check(bool(version and re.fullmatch(r"\d+\.\d+\.\d+", version)), "Cargo.toml version is X.Y.Z", repr(version))
    print(f"  version {version}")
    check(str(chart.get("appVersion")) == version, "Chart.yaml appVersion = Cargo.toml version",
          f"{chart.get('appVersion')!r} != {version!r}")
    check(str(chart.get("version")) == version, "Chart.yaml version = Cargo.toml version",
          f"{chart.get('version')!r} != {version!r}")
    repo = values["image"]["repository"]
    try:
        image = render_image(root, helm)
        check(image == f"{repo}:{version}", "the chart's default image is IMAGE:version",
              f"renders {image!r}, expected {repo}:{version}")
    except RuntimeError as e:
        check(False, "the chart renders with its defaults", str(e))
    dockerfile = read(root, "Dockerfile")
    m = re.search(r"^ARG VERSION=(\S+)", dockerfile, re.M)
    if m:
        check(m.group(1) == version, "Dockerfile ARG VERSION default = version", f"{m.group(1)!r}")
    env = release.get("env", {})
    check(env.get("IMAGE") == repo, "release.yml pushes the chart's image repository",
          f"IMAGE={env.get('IMAGE')!r}, values.yaml image.repository={repo!r}")
    chart_repo = env.get("CHART_REPOSITORY", "")
    check(chart_repo.startswith("oci://"), "release.yml pushes the chart to an OCI registry", repr(chart_repo))
    check(f"{repo}:{version}" in readme, "README names the released image", f"{repo}:{version} not found")
    check(f"{chart_repo}/{chart['name']}" in readme, "README names the chart's OCI location",
          f"{chart_repo}/{chart['name']} not found")
    check(f"--version {version}" in readme, "README's install command pins the version", f"--version {version} not found")

    check(changelog.startswith("# Changelog") and "keepachangelog.com" in changelog,
          "CHANGELOG.md is in the Keep a Changelog format")
    for name in re.findall(r"^## \[([^\]]+)\]", changelog, re.M):
        if name != "Unreleased":
            check(re.search(rf"^## \[{re.escape(name)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M) is not None,
                  f"CHANGELOG.md [{name}] has a date", "expected '## [X.Y.Z] - YYYY-MM-DD'")
            check(re.search(rf"^\[{re.escape(name)}\]: \S+", changelog, re.M) is not None,
                  f"CHANGELOG.md [{name}] has a link")
    released = changelog_section(changelog, version)
    check(released is not None or changelog_section(changelog, "Unreleased") is not None,
          f"CHANGELOG.md has a section for {version} (or [Unreleased] until it is tagged)")
    if tag is not None:
        check(tag == f"v{version}", "the tag is v<version>", f"tag {tag!r}, version {version!r}")
        check(released is not None and re.match(rf"## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}", released),
              f"CHANGELOG.md has '## [{version}] - YYYY-MM-DD' for the tag")


def check_kubernetes_range(root):
    cargo = read(root, "Cargo.toml")
    chart = yaml.safe_load(read(root, "charts/migration-injector/Chart.yaml"))
    matrix_src = read(root, ".github/workflows/e2e-kind.yml")
    readme = read(root, "README.md")
    chart_readme = read(root, "charts/migration-injector/README.md")

    kube_version = str(chart.get("kubeVersion", ""))
    m = re.fullmatch(r">=\s*1\.(\d+)\.0-0", kube_version)
    check(m is not None, "Chart.yaml kubeVersion is '>=1.MIN.0-0'", repr(kube_version))
    low = int(m.group(1)) if m else None

    workflow = yaml.safe_load(matrix_src)
    entries = []
    for job in workflow.get("jobs", {}).values():
        entries += job.get("strategy", {}).get("matrix", {}).get("include", [])
    minors = []
    for e in entries:
        img = str(e.get("node_image", ""))
        im = re.fullmatch(r"kindest/node:v1\.(\d+)\.\d+@sha256:[0-9a-f]{64}", img)
        check(im is not None, f"kind node image {img} is pinned by digest")
        check(bool(re.fullmatch(r"v\d+\.\d+\.\d+", str(e.get("kind", "")))), f"kind version of {img} is pinned")
        if im:
            minors.append(int(im.group(1)))
            check(minor(str(e.get("kubernetes", ""))) == int(im.group(1)), f"matrix label of {img} matches its image")
    check(bool(minors), "e2e-kind.yml has a matrix of kind node images")
    if not minors:
        return
    oldest, newest = min(minors), max(minors)
    print(f"  supported range 1.{low} to 1.{newest}; kind matrix 1.{oldest} .. 1.{newest}")
    check(low == oldest, "the kind matrix starts at Chart.yaml's kubeVersion", f"1.{oldest} vs {kube_version}")
    check(any(v < 30 for v in minors) and any(v >= 30 for v in minors),
          "the kind matrix has versions with and without matchConditions (1.30)")
    check(f"Kubernetes 1.{low} to 1.{newest}" in readme, f"README.md says 'Kubernetes 1.{low} to 1.{newest}'")
    check(f"1.{low} to 1.{newest}" in chart_readme, f"the chart's README says '1.{low} to 1.{newest}'")
    fm = re.search(r'^k8s-openapi\s*=.*features\s*=\s*\[[^\]]*"v1_(\d+)"', cargo, re.M)
    check(fm is not None, "Cargo.toml builds k8s-openapi with one v1_NN feature")
    if fm and low is not None:
        feature = int(fm.group(1))
        check(low <= feature <= newest, f"k8s-openapi feature v1_{feature} is in the range 1.{low} to 1.{newest}")


def check_pins(root):
    wf_dir = os.path.join(root, ".github", "workflows")
    files = sorted(f for f in os.listdir(wf_dir) if f.endswith((".yml", ".yaml")))
    check(bool(files), "there are workflows")
    bad = []
    count = 0
    for f in files:
        for n, line in enumerate(read(root, f".github/workflows/{f}").splitlines(), 1):
            m = re.match(r"^\s*(?:-\s*)?uses:\s*(\S+)(.*)$", line)
            if not m or m.group(1).startswith(("./", "docker://")):
                continue
            count += 1
            if not re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", m.group(1)) or not re.match(r"\s+#\s*v\d", m.group(2)):
                bad.append(f"{f}:{n}: {line.strip()}")
    check(not bad, f"{count} third-party actions pinned by commit SHA with a version comment", "; ".join(bad))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
    ap.add_argument("--tag")
    ap.add_argument("--notes", metavar="VERSION")
    args = ap.parse_args()
    if args.notes:
        section = changelog_section(read(args.root, "CHANGELOG.md"), args.notes)
        if section is None:
            sys.exit(f"CHANGELOG.md has no section [{args.notes}]")
        print(section.split("\n", 1)[1].strip())
        return
    helm = os.environ.get("HELM") or subprocess.run(
        [os.path.join(args.root, "tests", "tools", "install-helm.sh")],
        capture_output=True, text=True, check=True).stdout.strip()
    print("versions")
    check_versions(args.root, helm, args.tag)
    print("supported Kubernetes range")
    check_kubernetes_range(args.root)
    print("workflows")
    check_pins(args.root)
    if FAILED:
        print(f"release metadata: {len(FAILED)} check(s) FAILED")
        sys.exit(1)
    print("release metadata: all checks passed")


if __name__ == "__main__":
    main()
