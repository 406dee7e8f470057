{{/* Chart name, possibly overridden. */}}
{{- define "nbkube.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object name prefix: <release>-nbkube, or the release name if it already contains the chart name. */}}
{{- define "nbkube.fullname" -}}
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

{{- define "nbkube.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of the operator pod. The gateway NetworkPolicy the operator creates admits exactly
pods labelled app.kubernetes.io/name=nbkube and app.kubernetes.io/component=operator in this
namespace (nbkube.config.Settings.operator_labels), so these two are fixed, whatever nameOverride says.
*/}}
{{- define "nbkube.selectorLabels" -}}
app.kubernetes.io/name: nbkube
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "nbkube.labels" -}}
helm.sh/chart: {{ include "nbkube.chart" . }}
{{ include "nbkube.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: nbkube
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "nbkube.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nbkube.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "nbkube.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "nbkube.claimName" -}}
{{- default (printf "%s-results" (include "nbkube.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{- define "nbkube.metricsServiceName" -}}
{{- printf "%s-metrics" (include "nbkube.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nbkube.apiServiceName" -}}
{{- printf "%s-api" (include "nbkube.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret holding the key gateway tokens are derived from (the operator creates it if absent). */}}
{{- define "nbkube.tokenKeySecretName" -}}
{{- printf "%s-gateway-token-key" (include "nbkube.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
