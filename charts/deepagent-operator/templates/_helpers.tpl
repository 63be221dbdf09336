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
Rules the operator needs in every namespace it watches: exactly what its code uses (the chart
README says what each one is for; tests/k8s/test_operator_rbac.py checks them both ways).
Secrets are never listed or watched.
*/}}
{{- define "deepagent-operator.namespacedRules" -}}
- apiGroups: ["deepagent.dev"]
  resources: ["deepagents"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["deepagent.dev"]
  resources: ["deepagents/status"]
  verbs: ["patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
