{{- define "twinhull.labels" -}}
app.kubernetes.io/name: twinhull
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: twinhull
{{- end }}

{{- define "twinhull.tiers" -}}
{{ .Values.tiers | default (.Files.Get "files/tiers.yaml") }}
{{- end }}
