{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "modeldeploy.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, prefixed with the chart name unless it already contains it. */}}
{{- define "modeldeploy.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Labels on every object. No chart version or date, so output only changes when the config does. */}}
{{- define "modeldeploy.labels" -}}
app.kubernetes.io/name: {{ include "modeldeploy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: modeldeploy
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels: immutable on a Deployment, so only the stable pair. */}}
{{- define "modeldeploy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modeldeploy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "modeldeploy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modeldeploy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "modeldeploy.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when Kopf peering is on: forced, or more than one replica. */}}
{{- define "modeldeploy.peering" -}}
{{- if or .Values.peering.enabled (gt (int .Values.replicas) 1) }}true{{ end }}
{{- end }}

{{/* The operator's config file: only the keys a user set, so the operator's defaults apply to the rest. */}}
{{- define "modeldeploy.config" -}}
{{- $images := dict }}
{{- range $key, $value := .Values.config.images }}
{{- if $value }}{{ $_ := set $images $key $value }}{{ end }}
{{- end }}
{{- $labels := dict }}
{{- range $key, $value := .Values.config.labelMappings }}
{{- if $value }}{{ $_ := set $labels $key $value }}{{ end }}
{{- end }}
{{- $config := dict "imagePullPolicy" .Values.config.imagePullPolicy }}
{{- if $images }}{{ $_ := set $config "images" $images }}{{ end }}
{{- if $labels }}{{ $_ := set $config "labelMappings" $labels }}{{ end }}
{{- if .Values.config.allowTrustRemoteCode }}{{ $_ := set $config "allowTrustRemoteCode" true }}{{ end }}
{{- if .Values.config.vllmExtraFamilies }}{{ $_ := set $config "vllmExtraFamilies" .Values.config.vllmExtraFamilies }}{{ end }}
{{- with .Values.config.autoscaling }}{{ $_ := set $config "autoscaling" . }}{{ end }}
{{- if .Values.config.gateway.name }}{{ $_ := set $config "gateway" .Values.config.gateway }}{{ end }}
{{- with .Values.config.networkPolicies }}{{ $_ := set $config "networkPolicies" . }}{{ end }}
{{- if .Values.config.fetchEnv }}{{ $_ := set $config "fetchEnv" .Values.config.fetchEnv }}{{ end }}
{{- with .Values.config.modelCache }}
{{- $cache := omit . "storageClassName" }}
{{- if .storageClassName }}{{ $_ := set $cache "storageClassName" .storageClassName }}{{ end }}
{{- $_ := set $config "modelCache" $cache }}
{{- end }}
{{- with .Values.config.policy }}{{ $_ := set $config "policy" . }}{{ end }}
{{- toYaml $config }}
{{- end }}
