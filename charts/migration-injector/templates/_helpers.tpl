{{/* vim: set filetype=mustache: */}}

{{- define "migration-injector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or <release> when it already contains the chart name.
Kept to 52 characters so that suffixed names (-ca, -tls, -selfsigned; -self-managed-ca fits a Secret name too) stay valid.
*/}}
{{- define "migration-injector.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "migration-injector.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "migration-injector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "migration-injector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of every object of the chart. migrations.io/injection=disabled keeps the chart's own
objects (its Deployment and, through the pod template, its ReplicaSets and Pods) away from the
webhook through its objectSelector, which needs no namespace label (Kubernetes 1.20 sets none):
the webhook never blocks its own upgrade, even while it is down. Not a selector label (those
are immutable), and commonLabels cannot override it.
*/}}
{{- define "migration-injector.labels" -}}
helm.sh/chart: {{ include "migration-injector.chart" . }}
{{ include "migration-injector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: admission-webhook
migrations.io/injection: disabled
{{- with omit .Values.commonLabels "migrations.io/injection" }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Namespaces the webhook never sees (namespaceSelector, label kubernetes.io/metadata.name, set by
Kubernetes from 1.21 on): the release namespace, the system namespaces, cert-manager's in
certManager mode (the webhook's certificate depends on it), and webhook.excludeNamespaces.
A JSON list.
*/}}
{{- define "migration-injector.excludedNamespaces" -}}
{{- $ns := list .Release.Namespace "kube-system" "kube-public" "kube-node-lease" }}
{{- if eq .Values.tls.mode "certManager" }}
{{- $ns = append $ns "cert-manager" }}
{{- end }}
{{- concat $ns .Values.webhook.excludeNamespaces | uniq | toJson }}
{{- end }}

{{- define "migration-injector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "migration-injector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "migration-injector.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding tls.crt / tls.key for the server. */}}
{{- define "migration-injector.tlsSecretName" -}}
{{- if eq .Values.tls.mode "existingSecret" }}
{{- required "tls.existingSecret is required when tls.mode=existingSecret" .Values.tls.existingSecret }}
{{- else if and (eq .Values.tls.mode "url") .Values.tls.existingSecret }}
{{- .Values.tls.existingSecret }}
{{- else if eq .Values.tls.mode "certManager" }}
{{- /* Not helm mode's name: in a switch between the two, neither Helm nor cert-manager takes
over (or deletes) the other's Secret. */}}
{{- printf "%s-cert-manager-tls" (include "migration-injector.fullname" .) }}
{{- else }}
{{- printf "%s-tls" (include "migration-injector.fullname" .) }}
{{- end }}
{{- end }}

{{- define "migration-injector.serviceName" -}}
{{- include "migration-injector.fullname" . }}
{{- end }}

{{/* Name of the (cluster-scoped) MutatingWebhookConfiguration. */}}
{{- define "migration-injector.webhookConfigName" -}}
{{- include "migration-injector.fullname" . }}
{{- end }}

{{/* tls.mode=selfManaged: the Secret in the release namespace holding the CA the replicas share. */}}
{{- define "migration-injector.caSecretName" -}}
{{- printf "%s-self-managed-ca" (include "migration-injector.fullname" .) }}
{{- end }}

{{/* DNS names of the in-cluster Service, for the serving certificate. */}}
{{- define "migration-injector.dnsNames" -}}
{{- $svc := include "migration-injector.serviceName" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}

{{/*
policy/v1 PodDisruptionBudget exists from Kubernetes 1.21 (policy/v1beta1 was removed in 1.25).
Discovery ("policy/v1/PodDisruptionBudget", present on a live cluster or via --api-versions)
wins; otherwise decide by the Kubernetes version (`helm template --kube-version`). The bare
group-version "policy/v1" is not used: Helm's built-in offline set always contains it.
*/}}
{{- define "migration-injector.pdbApiVersion" -}}
{{- if or (.Capabilities.APIVersions.Has "policy/v1/PodDisruptionBudget") (semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version) }}
{{- "policy/v1" }}
{{- else }}
{{- "policy/v1beta1" }}
{{- end }}
{{- end }}

{{/*
Whether to render matchConditions: "true" or "".
matchConditions are GA (and on by default) from Kubernetes 1.30, the same release that made
admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy GA. So in auto mode the chart emits them
when either
  - discovery lists the kind "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy" (a live
    cluster during install/upgrade, or `helm template --api-versions ...`). Helm's built-in
    offline set holds only group-versions, never this kind, so it cannot fire by accident; the
    bare group-version "admissionregistration.k8s.io/v1" would (it exists since 1.16), or
  - the Kubernetes version is >= 1.30 (the live server's version, or `--kube-version`; the "-0"
    admits vendor suffixes such as v1.30.4-eks-abc).
An older API server would reject the unknown field (or drop it silently), so when in doubt the
chart leaves it out; the webhook itself ignores objects without the annotation anyway.
*/}}
{{- define "migration-injector.matchConditionsEnabled" -}}
{{- $mode := .Values.webhook.matchConditions }}
{{- if eq $mode "enabled" }}
{{- "true" }}
{{- else if eq $mode "auto" }}
{{- if or (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy") (semverCompare ">=1.30-0" .Capabilities.KubeVersion.Version) }}
{{- "true" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
CEL: does `obj` (object or oldObject) carry migrations.io/image on its own metadata, on its pod
template (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job) or on its job template's pod
template (CronJob)? obj is null for oldObject on CREATE and for object on DELETE; every field on
the way is guarded with has().
*/}}
{{- define "migration-injector.celHasImage" -}}
{{- $o := . -}}
{{- $k := "'migrations.io/image'" -}}
({{ $o }} != null && (
  (has({{ $o }}.metadata) && has({{ $o }}.metadata.annotations)
    && {{ $k }} in {{ $o }}.metadata.annotations)
  || (has({{ $o }}.spec) && has({{ $o }}.spec.template)
    && has({{ $o }}.spec.template.metadata) && has({{ $o }}.spec.template.metadata.annotations)
    && {{ $k }} in {{ $o }}.spec.template.metadata.annotations)
  || (has({{ $o }}.spec) && has({{ $o }}.spec.jobTemplate)
    && has({{ $o }}.spec.jobTemplate.spec) && has({{ $o }}.spec.jobTemplate.spec.template)
    && has({{ $o }}.spec.jobTemplate.spec.template.metadata)
    && has({{ $o }}.spec.jobTemplate.spec.template.metadata.annotations)
    && {{ $k }} in {{ $o }}.spec.jobTemplate.spec.template.metadata.annotations)))
{{- end }}

{{/*
The server's environment: listen addresses always (they must match the ports), then either the
TLS files (they must match the mounted Secret) or, with tls.mode=selfManaged, the self-managed
settings (--tls-cert-file/--tls-key-file conflict with --self-managed, so they are never set
then); every other config value only when it is set (not null, not "").
Integers are printed with int64 (Helm may hand them over as json.Number or float64).
*/}}
{{- define "migration-injector.env" -}}
{{- $c := .Values.config }}
{{- $tlsDir := "/etc/migration-injector/tls" }}
{{- $env := list }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_LISTEN" "value" ($c.listen | default (printf "0.0.0.0:%d" (int64 .Values.containerPorts.webhook)))) }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_ADMIN_LISTEN" "value" ($c.adminListen | default (printf "0.0.0.0:%d" (int64 .Values.containerPorts.admin)))) }}
{{- if eq .Values.tls.mode "selfManaged" }}
{{- if or $c.tlsCertFile $c.tlsKeyFile }}
{{- fail "config.tlsCertFile and config.tlsKeyFile cannot be used with tls.mode=selfManaged (the binary issues its own certificate; --tls-cert-file/--tls-key-file conflict with --self-managed)" }}
{{- end }}
{{- $sm := .Values.tls.selfManaged }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_SELF_MANAGED" "value" "true") }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_NAMESPACE" "valueFrom" (dict "fieldRef" (dict "apiVersion" "v1" "fieldPath" "metadata.namespace"))) }}
{{- /* Unique per replica even with hostNetwork (where $HOSTNAME is the node's name). */}}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_POD_NAME" "valueFrom" (dict "fieldRef" (dict "apiVersion" "v1" "fieldPath" "metadata.name"))) }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_SERVICE_NAME" "value" (include "migration-injector.serviceName" .)) }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_CA_SECRET_NAME" "value" (include "migration-injector.caSecretName" .)) }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_WEBHOOK_CONFIG_NAME" "value" (include "migration-injector.webhookConfigName" .)) }}
{{- with $sm.extraIPs }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_CERT_IPS" "value" (join "," .)) }}
{{- end }}
{{- if not (kindIs "invalid" $sm.certDays) }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_SELF_MANAGED_CERT_DAYS" "value" ($sm.certDays | int64 | toString)) }}
{{- end }}
{{- else }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_TLS_CERT_FILE" "value" ($c.tlsCertFile | default (printf "%s/tls.crt" $tlsDir))) }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_TLS_KEY_FILE" "value" ($c.tlsKeyFile | default (printf "%s/tls.key" $tlsDir))) }}
{{- if include "migration-injector.manageCaBundle" . }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_MANAGE_CA_BUNDLE" "value" "true") }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_TLS_CA_FILE" "value" (printf "%s/ca.crt" $tlsDir)) }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_POD_NAME" "valueFrom" (dict "fieldRef" (dict "apiVersion" "v1" "fieldPath" "metadata.name"))) }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_WEBHOOK_CONFIG_NAME" "value" (include "migration-injector.webhookConfigName" .)) }}
{{- end }}
{{- end }}
{{- $ints := list
      (list "MIGRATION_INJECTOR_CERT_RELOAD_INTERVAL" $c.certReloadInterval)
      (list "MIGRATION_INJECTOR_MAX_BODY_BYTES" $c.maxBodyBytes)
      (list "MIGRATION_INJECTOR_REQUEST_TIMEOUT_SECONDS" $c.requestTimeoutSeconds)
      (list "MIGRATION_INJECTOR_SHUTDOWN_GRACE_SECONDS" $c.shutdownGraceSeconds)
      (list "MIGRATION_INJECTOR_SHUTDOWN_DELAY_SECONDS" $c.shutdownDelaySeconds)
      (list "MIGRATION_INJECTOR_MEMORY_BUDGET_BYTES" $c.memoryBudgetBytes)
      (list "MIGRATION_INJECTOR_MAX_CONNECTIONS" $c.maxConnections)
      (list "MIGRATION_INJECTOR_IDLE_TIMEOUT_SECONDS" $c.idleTimeoutSeconds)
      (list "MIGRATION_INJECTOR_MAX_CONCURRENT_STREAMS" $c.maxConcurrentStreams)
      (list "MIGRATION_INJECTOR_CA_BUNDLE_CHECK_INTERVAL" $c.caBundleCheckInterval) }}
{{- range $ints }}
{{- if not (kindIs "invalid" (index . 1)) }}
{{- $env = append $env (dict "name" (index . 0) "value" (index . 1 | int64 | toString)) }}
{{- end }}
{{- end }}
{{- $strings := list
      (list "MIGRATION_INJECTOR_LOG_FORMAT" $c.logFormat)
      (list "MIGRATION_INJECTOR_LOG_LEVEL" $c.logLevel)
      (list "MIGRATION_INJECTOR_DEFAULT_SECRET" $c.defaultSecret)
      (list "MIGRATION_INJECTOR_DEFAULT_VOLUME_NAME" $c.defaultVolumeName)
      (list "MIGRATION_INJECTOR_DEFAULT_ENV" $c.defaultEnv)
      (list "MIGRATION_INJECTOR_DEFAULT_MOUNT_PATH" $c.defaultMountPath)
      (list "MIGRATION_INJECTOR_DEFAULT_CONFIG_FILE" $c.defaultConfigFile)
      (list "MIGRATION_INJECTOR_DEFAULT_PULL_POLICY" $c.defaultPullPolicy)
      (list "MIGRATION_INJECTOR_DEFAULT_CONTAINER_NAME" $c.defaultContainerName)
      (list "MIGRATION_INJECTOR_DEFAULT_POSITION" $c.defaultPosition)
      (list "MIGRATION_INJECTOR_DEFAULT_CPU_REQUEST" $c.defaultCpuRequest)
      (list "MIGRATION_INJECTOR_DEFAULT_CPU_LIMIT" $c.defaultCpuLimit)
      (list "MIGRATION_INJECTOR_DEFAULT_MEMORY_REQUEST" $c.defaultMemoryRequest)
      (list "MIGRATION_INJECTOR_DEFAULT_MEMORY_LIMIT" $c.defaultMemoryLimit)
      (list "MIGRATION_INJECTOR_DEFAULT_LOCK_TIMEOUT" $c.defaultLockTimeout)
      (list "MIGRATION_INJECTOR_DEFAULT_DIR" $c.defaultDir)
      (list "MIGRATION_INJECTOR_RUN_MODE" $c.runMode) }}
{{- range $strings }}
{{- $v := index . 1 }}
{{- if and (not (kindIs "invalid" $v)) (ne (toString $v) "") }}
{{- $env = append $env (dict "name" (index . 0) "value" (toString $v)) }}
{{- end }}
{{- end }}
{{- $jsons := list
      (list "MIGRATION_INJECTOR_DEFAULT_ARGS" $c.defaultArgs)
      (list "MIGRATION_INJECTOR_DEFAULT_COMMAND" $c.defaultCommand)
      (list "MIGRATION_INJECTOR_SECURITY_CONTEXT" $c.securityContext) }}
{{- range $jsons }}
{{- if not (kindIs "invalid" (index . 1)) }}
{{- $env = append $env (dict "name" (index . 0) "value" (index . 1 | toJson)) }}
{{- end }}
{{- end }}
{{- with $c.allowedImagePrefixes }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_ALLOWED_IMAGE_PREFIXES" "value" (join "," .)) }}
{{- end }}
{{- if eq (toString $c.runMode) "once" }}
{{- if not .Values.controller.enabled }}
{{- fail "config.runMode=once needs controller.enabled=true (without the controller every workload in once mode is denied)" }}
{{- end }}
{{- end }}
{{- if .Values.controller.enabled }}
{{- /* Run-once mode: the waiting init container runs this chart's own image (`wait`), and the
pods webhook reads the runs' status from a watch of MigrationRuns (RBAC: get/list/watch). */}}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_WAITER_IMAGE" "value" (include "migration-injector.image" .)) }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_RUN_STATUS_CACHE" "value" "true") }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/* An IntOrString: "50%" stays a quoted string, 1 (int, float64 or json.Number) an integer. */}}
{{- define "migration-injector.intOrPercent" -}}
{{- if hasSuffix "%" (toString .) }}
{{- toString . | quote }}
{{- else }}
{{- int64 . }}
{{- end }}
{{- end }}

{{/* A YAML flow list of quoted strings: ["a", "b"]. */}}
{{- define "migration-injector.flowList" -}}
[{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ $e | quote }}{{ end }}]
{{- end }}

{{/*
"true" when the webhook's replicas keep the caBundle for their mounted certificate
(tls.manageCaBundle, certManager and existingSecret modes), "" otherwise.
*/}}
{{- define "migration-injector.manageCaBundle" -}}
{{- if .Values.tls.manageCaBundle }}
{{- if not (has .Values.tls.mode (list "certManager" "existingSecret")) }}
{{- fail "tls.manageCaBundle works with tls.mode=certManager or existingSecret (selfManaged keeps the caBundle anyway; helm and url render it)" }}
{{- end }}
{{- print "true" }}
{{- end }}
{{- end }}

{{/*
"true" when the webhook's replicas patch the caBundle of their MutatingWebhookConfiguration
through the Kubernetes API (tls.mode=selfManaged, or tls.manageCaBundle), "" otherwise: they then
need the ServiceAccount token and the ClusterRole.
*/}}
{{- define "migration-injector.keepsCaBundle" -}}
{{- if or (eq .Values.tls.mode "selfManaged") (include "migration-injector.manageCaBundle" .) }}
{{- print "true" }}
{{- end }}
{{- end }}


{{/*
The controller (run-once mode): its own name, labels and selector. Its pods must not carry the
webhook's selector labels (app.kubernetes.io/name + instance), or the webhook's Service, PDB,
NetworkPolicy and anti-affinity would select them: its app.kubernetes.io/name is <name>-controller.
*/}}
{{- define "migration-injector.controllerName" -}}
{{- printf "%s-controller" (include "migration-injector.fullname" .) }}
{{- end }}

{{- define "migration-injector.controllerSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-controller" (include "migration-injector.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "migration-injector.controllerLabels" -}}
helm.sh/chart: {{ include "migration-injector.chart" . }}
{{ include "migration-injector.controllerSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: controller
migrations.io/injection: disabled
{{- with omit .Values.commonLabels "migrations.io/injection" }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The ServiceAccount of the controller (always its own: its RBAC is not the webhook's). */}}
{{- define "migration-injector.controllerServiceAccountName" -}}
{{- include "migration-injector.controllerName" . }}
{{- end }}

{{/* The leader election Lease (in the release namespace). */}}
{{- define "migration-injector.leaseName" -}}
{{- .Values.controller.leaseName | default (include "migration-injector.controllerName" .) }}
{{- end }}

{{/* Admin port of the controller (/healthz, /readyz, /metrics): the binary's default 8081. */}}
{{- define "migration-injector.controllerAdminPort" -}}
8081
{{- end }}

{{/*
The controller's environment: its namespace and pod name (the Lease and its holder), the Lease,
the admin address, the run settings when set, and the log settings shared with the webhook.
*/}}
{{- define "migration-injector.controllerEnv" -}}
{{- $c := .Values.config }}
{{- $k := .Values.controller }}
{{- $env := list }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_NAMESPACE" "valueFrom" (dict "fieldRef" (dict "apiVersion" "v1" "fieldPath" "metadata.namespace"))) }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_POD_NAME" "valueFrom" (dict "fieldRef" (dict "apiVersion" "v1" "fieldPath" "metadata.name"))) }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_LEASE_NAME" "value" (include "migration-injector.leaseName" .)) }}
{{- $env = append $env (dict "name" "MIGRATION_INJECTOR_ADMIN_LISTEN" "value" (printf "0.0.0.0:%s" (include "migration-injector.controllerAdminPort" .))) }}
{{- range list (list "MIGRATION_INJECTOR_MAX_ATTEMPTS" $k.maxAttempts) (list "MIGRATION_INJECTOR_JOB_DEADLINE_SECONDS" $k.jobDeadlineSeconds) }}
{{- if not (kindIs "invalid" (index . 1)) }}
{{- $env = append $env (dict "name" (index . 0) "value" (index . 1 | int64 | toString)) }}
{{- end }}
{{- end }}
{{- range list (list "MIGRATION_INJECTOR_LOG_FORMAT" $c.logFormat) (list "MIGRATION_INJECTOR_LOG_LEVEL" $c.logLevel) }}
{{- $v := index . 1 }}
{{- if and (not (kindIs "invalid" $v)) (ne (toString $v) "") }}
{{- $env = append $env (dict "name" (index . 0) "value" (toString $v)) }}
{{- end }}
{{- end }}
{{- toYaml $env }}
{{- end }}
