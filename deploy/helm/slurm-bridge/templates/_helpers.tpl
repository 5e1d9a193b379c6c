{{/* Names */}}
{{- define "slurm-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "slurm-bridge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "slurm-bridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "slurm-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "slurm-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slurm-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
The Deployments this release runs, as a list of dicts: name (object name suffix, "" for all-in-one),
component (label value), args, duties (which of scheduler/controller it carries out), replicas.
*/}}
{{- define "slurm-bridge.deployments" -}}
{{- $out := list -}}
{{- if eq .Values.mode "all-in-one" -}}
{{- $out = append $out (dict "suffix" "" "component" "all-in-one" "args" (list "run") "duties" (list "scheduler" "controller") "exporter" true "webhook" .Values.webhook.enabled "replicas" .Values.replicas) -}}
{{- else if eq .Values.mode "split" -}}
{{- $out = append $out (dict "suffix" "-scheduler" "component" "scheduler" "args" (ternary (list "run" "--components=scheduler,webhook") (list "scheduler") .Values.webhook.enabled) "duties" (list "scheduler") "exporter" false "webhook" .Values.webhook.enabled "replicas" .Values.replicas) -}}
{{- $out = append $out (dict "suffix" "-controller" "component" "controller" "args" (list "controller") "duties" (list "controller") "exporter" false "webhook" false "replicas" .Values.replicas) -}}
{{- $out = append $out (dict "suffix" "-exporter" "component" "exporter" "args" (list "exporter") "duties" (list) "exporter" true "webhook" false "replicas" .Values.exporterReplicas) -}}
{{- else -}}
{{- fail (printf "mode must be all-in-one or split, not %q" .Values.mode) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The webhook: its Service name, the component and ServiceAccount that serve it, where its certificates are. */}}
{{- define "slurm-bridge.webhookService" -}}{{ include "slurm-bridge.fullname" . }}-webhook{{- end -}}
{{- define "slurm-bridge.webhookComponent" -}}{{ ternary "all-in-one" "scheduler" (eq .Values.mode "all-in-one") }}{{- end -}}
{{- define "slurm-bridge.webhookServiceAccount" -}}{{ include "slurm-bridge.fullname" . }}{{ ternary "" "-scheduler" (eq .Values.mode "all-in-one") }}{{- end -}}
{{/* The identities that may set the bridge's own labels, annotations and finalizer: its scheduler and controller. */}}
{{- define "slurm-bridge.bridgeUsernames" -}}
{{- $out := list -}}
{{- range $d := include "slurm-bridge.deployments" . | fromJsonArray -}}
{{- if $d.duties -}}
{{- $out = append $out (printf "system:serviceaccount:%s:%s%s" $.Release.Namespace (include "slurm-bridge.fullname" $) $d.suffix) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}
{{- define "slurm-bridge.webhookCertDir" -}}/var/run/slurm-bridge/webhook{{- end -}}

{{/* The base name of the leader-election Lease (the bridge adds -scheduler / -controller when apart). */}}
{{- define "slurm-bridge.leaseName" -}}
{{- default (include "slurm-bridge.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{- define "slurm-bridge.nodesetNamespace" -}}
{{- default .Release.Namespace .Values.nodeset.namespace -}}
{{- end -}}

{{/* Where secrets are mounted in the pods. */}}
{{- define "slurm-bridge.tokenPath" -}}/var/run/secrets/slurm-bridge/slurm-token/token{{- end -}}
{{- define "slurm-bridge.jwtKeyPath" -}}/var/run/secrets/slurm-bridge/slurm-jwt-key/jwt.key{{- end -}}
{{- define "slurm-bridge.operatorTokenPath" -}}/var/run/secrets/slurm-bridge/nodeset-token/token{{- end -}}

{{/* The bridge's config file (bridge/config.py), from the values. */}}
{{- define "slurm-bridge.config" -}}
{{- $v := .Values -}}
{{- if and $v.slurm.tokenSecret.name $v.slurm.jwtKeySecret.name -}}
{{- fail "set only one of slurm.tokenSecret.name and slurm.jwtKeySecret.name" -}}
{{- end -}}
{{- if not (or $v.slurm.tokenSecret.name $v.slurm.jwtKeySecret.name) -}}
{{- fail "slurmrestd needs a JWT: set slurm.tokenSecret.name (a token) or slurm.jwtKeySecret.name (the key to mint tokens)" -}}
{{- end -}}
{{- if not $v.namespaces -}}
{{- fail "namespaces: name at least one namespace whose pods the bridge schedules" -}}
{{- end -}}
{{- $slurm := dict "url" $v.slurm.url "user" $v.slurm.user "partition" $v.slurm.partition "placeholder_mode" $v.slurm.placeholderMode -}}
{{- if $v.slurm.apiVersion }}{{ $_ := set $slurm "api_version" $v.slurm.apiVersion }}{{ end -}}
{{- if $v.slurm.defaultTimeLimitMinutes }}{{ $_ := set $slurm "default_time_limit_minutes" $v.slurm.defaultTimeLimitMinutes }}{{ end -}}
{{- if $v.slurm.tokenSecret.name }}{{ $_ := set $slurm "token_file" (include "slurm-bridge.tokenPath" .) }}{{ end -}}
{{- if $v.slurm.jwtKeySecret.name }}{{ $_ := set $slurm "jwt_key_file" (include "slurm-bridge.jwtKeyPath" .) }}{{ end -}}
{{- $le := dict "enabled" $v.leaderElection.enabled "lease_name" (include "slurm-bridge.leaseName" .) "lease_namespace" .Release.Namespace "lease_duration_seconds" $v.leaderElection.leaseDurationSeconds "renew_deadline_seconds" $v.leaderElection.renewDeadlineSeconds "retry_period_seconds" $v.leaderElection.retryPeriodSeconds -}}
{{- $ns := dict "enabled" $v.nodeset.enabled -}}
{{- if $v.nodeset.enabled }}{{ $_ := set $ns "namespace" (include "slurm-bridge.nodesetNamespace" .) }}{{ end -}}
{{- if $v.nodeset.slurmUser }}{{ $_ := set $ns "slurm_user" $v.nodeset.slurmUser }}{{ end -}}
{{- if $v.nodeset.tokenSecret.name }}{{ $_ := set $ns "token_file" (include "slurm-bridge.operatorTokenPath" .) }}{{ end -}}
{{- $cfg := dict "scheduler_name" $v.schedulerName "namespaces" $v.namespaces "node_selector" $v.bindableNodeSelector "metrics_listen_address" (printf "0.0.0.0:%d" (int $v.metrics.port)) "slurm" $slurm "leader_election" $le "nodeset" $ns "exporter" (dict "per_user_metrics" $v.exporter.perUserMetrics "per_node_metrics" $v.exporter.perNodeMetrics) -}}
{{- if $v.nodeNameLabel }}{{ $_ := set $cfg "node_name_label" $v.nodeNameLabel }}{{ end -}}
{{- if $v.webhook.enabled -}}
{{- if not (has $v.webhook.certificates (list "self" "cert-manager")) -}}
{{- fail (printf "webhook.certificates must be self or cert-manager, not %q" $v.webhook.certificates) -}}
{{- end -}}
{{- $svc := include "slurm-bridge.webhookService" . -}}
{{- $self := eq $v.webhook.certificates "self" -}}
{{- if and $self (gt (int $v.replicas) 1) -}}
{{- fail "webhook.certificates=self makes a CA per pod, so it serves one replica: set replicas: 1, or webhook.certificates: cert-manager" -}}
{{- end -}}
{{- $wh := dict "enabled" true "listen_address" (printf "0.0.0.0:%d" (int $v.webhook.port)) "cert_dir" (include "slurm-bridge.webhookCertDir" .) "generate_certificates" $self "dns_names" (list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace)) "bridge_usernames" (include "slurm-bridge.bridgeUsernames" . | fromJsonArray) -}}
{{- if $self }}{{ $_ := set $wh "registration_name" (include "slurm-bridge.fullname" .) }}{{ end -}}
{{- $_ := set $cfg "webhook" $wh -}}
{{- end -}}
{{- if $v.clusterId }}{{ $_ := set $cfg "cluster_id" $v.clusterId }}{{ end -}}
{{- toYaml (mergeOverwrite $cfg (deepCopy $v.config)) -}}
{{- end -}}
