{{/* Chart name, truncated to 63 chars. */}}
{{- define "deepagent-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "deepagent-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "deepagent-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "deepagent-operator.labels" -}}
helm.sh/chart: {{ include "deepagent-operator.chart" . }}
{{ include "deepagent-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: deepagent-temporal
{{- end }}

{{/* Selector labels. */}}
{{- define "deepagent-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "deepagent-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "deepagent-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "deepagent-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "deepagent-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (toString (default .Chart.AppVersion .Values.image.tag)) }}
{{- end }}

{{- define "deepagent-operator.runtimeImage" -}}
{{- if .Values.runtimeImage.repository }}
{{- printf "%s:%s" .Values.runtimeImage.repository (toString (default .Chart.AppVersion .Values.runtimeImage.tag)) }}
{{- end }}
{{- end }}

{{- define "deepagent-operator.redisImage" -}}
{{- printf "%s:%s" .Values.redisImage.repository (toString .Values.redisImage.tag) }}
{{- end }}

{{/*
Rules the operator needs in every namespace it watches. Secrets: read the ones a DeepAgent
references (config hash), create and watch the <name>-redis-auth ones it generates.
*/}}
{{- define "deepagent-operator.namespacedRules" -}}
- apiGroups: ["deepagent.dev"]
  resources: ["deepagents"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["deepagent.dev"]
  resources: ["deepagents/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services", "secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.peering.enabled }}
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}
