{{/* Labels every object carries (the kustomize base's app.kubernetes.io/part-of, plus Helm's). */}}
{{- define "joulestream.labels" -}}
app.kubernetes.io/part-of: joulestream
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "joulestream.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* Settings every component reads: the ConfigMap, and the Kafka credentials Secret if any. */}}
{{- define "joulestream.envFrom" -}}
envFrom:
  - configMapRef:
      name: joulestream
{{- with .Values.kafka.credentialsSecret }}
  - secretRef:
      name: {{ . }}
{{- end }}
{{- end -}}

{{/* A change of settings rolls every pod (kustomize's hash suffix does the same). */}}
{{- define "joulestream.checksum" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end -}}
