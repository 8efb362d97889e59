"""Scenarios against a real kube-apiserver: the ordered list and its runner. Every assertion reads
back what the API server stored (or returned for a server-side dry run), never the webhook's own
output.

Run by tests/e2e/run.sh, which provides E2E_* environment variables and KUBECONFIG (the run
context, read once by apiserver/helpers.py). E2E_ONLY=N runs scenario N alone.

Where to add a scenario: a function in the module of its topic under apiserver/ (mutation,
webhook_down, chart, certificates, check_cmd, inject_dry_run; a new module for a new topic), using
the helpers of apiserver/helpers.py and raising AssertionError (eq does) on a failed check; then one line in
SCENARIOS below, numbered, at its place in the order.
"""

import json
import os
import sys
import time

from apiserver.certificates import (s12_self_managed_replicas_race, s15_tls_mode_switch_keeps_the_old_ca,
                                    s16_replicas_keep_the_ca_bundle_for_files)
from apiserver.chart import s9_kind_manifests_valid, s10_helm_chart_url_mode
from apiserver.check_cmd import s14_check_diagnoses
from apiserver.helpers import Webhook, kubectl, webhook_configuration
from apiserver.inject_dry_run import s17_inject_output_passes_dry_run
from apiserver.mutation import (s1_guide_deployment, s2_create_deployment_and_existing_init, s3_updates,
                                s4_overrides_and_kinds, s5_bad_annotations, s6_dry_run_and_server_side,
                                s7_unannotated_unchanged, s11_controller_copies_untouched)
from apiserver.webhook_down import s8_webhook_down, s13_own_upgrade_while_down

FAILED = []


def scenarios(webhook):
    """The ordered list: (title, function). The webhook process is an argument of the scenarios
    that stop and restart it."""
    return [
        ("1 guide Deployment", s1_guide_deployment),
        ("2 kubectl create deployment; existing init containers and volumes", s2_create_deployment_and_existing_init),
        ("3 UPDATE: image change, re-apply, opt-out", s3_updates),
        ("4 every override; StatefulSet, Job, CronJob, DaemonSet, Pod", s4_overrides_and_kinds),
        ("5 bad annotations are refused and nothing is stored", s5_bad_annotations),
        ("6 --dry-run=server and --server-side", s6_dry_run_and_server_side),
        ("7 unannotated Deployments are stored unchanged", s7_unannotated_unchanged),
        ("8 webhook down with failurePolicy Fail, then back", lambda: s8_webhook_down(webhook)),
        ("9 kind e2e manifests pass server-side validation", s9_kind_manifests_valid),
        ("10 Helm chart (url mode) installs and mutates", s10_helm_chart_url_mode),
        ("11 controller-made copies of a template are left alone", s11_controller_copies_untouched),
        ("12 self-managed certificates: two replicas race, one CA", s12_self_managed_replicas_race),
        ("13 the chart's own Deployment installs and upgrades while the webhook is down",
         lambda: s13_own_upgrade_while_down(webhook)),
        ("14 migration-injector check diagnoses each broken piece", s14_check_diagnoses),
        ("15 TLS mode switches keep the old pods' CA trusted", s15_tls_mode_switch_keeps_the_old_ca),
        ("16 replicas keep the caBundle for certificate files (--manage-ca-bundle)",
         s16_replicas_keep_the_ca_bundle_for_files),
        ("17 inject's output of every fixture passes --dry-run=server like its input, through the webhook",
         s17_inject_output_passes_dry_run),
    ]


def main():
    webhook = Webhook()
    webhook.start()
    kubectl("apply", "-f", "-", input=json.dumps(webhook_configuration()))
    time.sleep(1)  # the API server picks up new webhook configurations asynchronously
    scenarios_list = scenarios(webhook)
    only = os.environ.get("E2E_ONLY")
    if only and not any(title.startswith(only + " ") for title, _ in scenarios_list):
        print(f"E2E_ONLY={only} matches no scenario")
        sys.exit(1)
    for title, fn in scenarios_list:
        if only and not title.startswith(only + " "):
            continue
        start = time.time()
        try:
            fn()
            print(f"ok   {title} ({time.time() - start:.1f}s)")
        except Exception as e:  # report every scenario, then fail
            FAILED.append(title)
            print(f"FAIL {title}: {e}")
    webhook.stop()
    if FAILED:
        print(f"{len(FAILED)} e2e scenario(s) failed")
        sys.exit(1)
    print("all e2e scenarios passed")


if __name__ == "__main__":
    main()
