#!/usr/bin/env python3
"""Counts migration executions as the container runtime saw them (run-once scenario, run_once.sh).

record: runs `CTR... events` (containerd's event stream) and, for each container containerd
  creates in namespace k8s.io, reads it at once (`CTR... containers info ID`: the CRI labels and
  the OCI process) and appends one JSON line to OUT: id, Kubernetes namespace, pod, container
  name, the process's args. Runs until SIGTERM, which stops its `ctr events` child by its pid.
count: prints how many recorded containers of Kubernetes namespace NS ran ARG0 (the migration
  tool's binary, e.g. dbmate) as their process, from line SKIP of the record on.
A container that is created is what the runtime executes: this survives the pods and Jobs being
deleted later, unlike a listing of the containers that still exist.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys

EVENT = re.compile(r"\s(?P<ns>\S+)\s(?P<topic>/\S+)\s(?P<body>\{.*\})\s*$")


def record(out, ctr):
    child = subprocess.Popen(ctr + ["events"], stdout=subprocess.PIPE, text=True)

    def stop(*_):
        child.terminate()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with open(out, "a") as f:
        for line in child.stdout:
            m = EVENT.search(line)
            if not m or m["ns"] != "k8s.io" or m["topic"] != "/containers/create":
                continue
            cid = json.loads(m["body"]).get("id", "")
            info = subprocess.run(ctr + ["containers", "info", cid], capture_output=True, text=True)
            rec = {"id": cid}
            if info.returncode == 0:
                c = json.loads(info.stdout)
                labels = c.get("Labels") or {}
                rec.update(namespace=labels.get("io.kubernetes.pod.namespace", ""),
                           pod=labels.get("io.kubernetes.pod.name", ""),
                           container=labels.get("io.kubernetes.container.name", ""),
                           args=((c.get("Spec") or {}).get("process") or {}).get("args") or [])
            else:
                rec["error"] = info.stderr.strip()
            f.write(json.dumps(rec) + "\n")
            f.flush()
    return child.wait()


def count(path, ns, arg0, skip):
    n = 0
    with open(path) as f:
        for i, line in enumerate(f):
            if i < skip:
                continue
            rec = json.loads(line)
            if "error" in rec:
                # Read too late to attribute: counted, so that an unknown never hides an execution.
                print(f"unattributed container {rec['id']}: {rec['error']}", file=sys.stderr)
                n += 1
            elif rec["namespace"] == ns and rec["args"] and os.path.basename(rec["args"][0]) == arg0:
                n += 1
    print(n)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--out", required=True)
    r.add_argument("ctr", nargs=argparse.REMAINDER, help="-- then the ctr command line (address, -n k8s.io)")
    c = sub.add_parser("count")
    c.add_argument("--in", dest="path", required=True)
    c.add_argument("--namespace", required=True)
    c.add_argument("--arg0", required=True)
    c.add_argument("--skip", type=int, default=0, help="lines of the record to skip (an earlier mark)")
    a = p.parse_args()
    if a.cmd == "record":
        ctr = a.ctr[1:] if a.ctr[:1] == ["--"] else a.ctr
        if not ctr:
            p.error("record: the ctr command line is missing")
        return record(a.out, ctr)
    return count(a.path, a.namespace, a.arg0, a.skip)


if __name__ == "__main__":
    sys.exit(main())
