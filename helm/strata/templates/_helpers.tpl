{{/*
Names, labels and the pieces every role's workload shares. Role templates call these with
  (dict "root" $ "role" "ingest")
*/}}

{{- define "strata.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "strata.fullname" -}}
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

{{/* <fullname>-<role>: the role's workload and HTTP Service. */}}
{{- define "strata.roleName" -}}
{{- printf "%s-%s" (include "strata.fullname" .root) .role | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "strata.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "strata.labels" -}}
helm.sh/chart: {{ include "strata.chart" . }}
{{ include "strata.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: strata
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "strata.selectorLabels" -}}
app.kubernetes.io/name: {{ include "strata.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "strata.roleLabels" -}}
{{ include "strata.labels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "strata.roleSelectorLabels" -}}
{{ include "strata.selectorLabels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "strata.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "strata.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "strata.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* True ("true") for the roles with a DIMSE listener. */}}
{{- define "strata.hasDimse" -}}
{{- if has .role (list "ingest" "gateway") }}true{{ end }}
{{- end }}

{{/* The search role runs as a StatefulSet with one PVC per replica. */}}
{{- define "strata.searchIsStatefulSet" -}}
{{- if and .Values.search.enabled .Values.search.persistence.enabled }}true{{ end }}
{{- end }}

{{/* postgres://USER@HOST:PORT/DB[?params]; the password comes from catalog.password_file. */}}
{{- define "strata.catalogUri" -}}
{{- $pg := .Values.postgresql }}
{{- $uri := printf "postgres://%s@%s:%v/%s" (urlquery $pg.user) $pg.host $pg.port $pg.database }}
{{- if $pg.params }}{{ $uri = printf "%s?%s" $uri $pg.params }}{{ end }}
{{- $uri }}
{{- end }}

{{- define "strata.storageUri" -}}
{{- $prefix := trimAll "/" .Values.s3.prefix }}
{{- if $prefix }}
{{- printf "s3://%s/%s" .Values.s3.bucket $prefix }}
{{- else }}
{{- printf "s3://%s" .Values.s3.bucket }}
{{- end }}
{{- end }}

{{/*
TOML writer. Helm's toToml turns every YAML integer into a float (65536.0), which Strata's
u32/u64 keys reject, so the chart writes TOML itself: integral numbers as integers, strings
as JSON strings (valid TOML basic strings), scalar keys before sub-tables.
*/}}
{{- define "strata.toml.value" -}}
{{- $value := . }}
{{- if kindIs "string" $value }}
{{- toJson $value }}
{{- else if kindIs "bool" $value }}
{{- ternary "true" "false" $value }}
{{- else if or (kindIs "float64" $value) (kindIs "int" $value) (kindIs "int64" $value) }}
{{- if eq (float64 $value) (floor $value) }}{{ int64 $value }}{{ else }}{{ $value }}{{ end }}
{{- else if kindIs "slice" $value }}
{{- $items := list }}
{{- range $value }}{{ $items = append $items (include "strata.toml.value" .) }}{{ end }}
{{- printf "[%s]" (join ", " $items) }}
{{- else if kindIs "invalid" $value }}
{{- fail "strata: config holds a null value; TOML has no null (remove the key instead)" }}
{{- else }}
{{- fail (printf "strata: config holds a %s, which this chart cannot write as TOML" (kindOf $value)) }}
{{- end }}
{{- end }}

{{- define "strata.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/* (dict "table" MAP "prefix" "section.sub") */}}
{{- define "strata.toml.table" -}}
{{- $table := .table }}
{{- $prefix := .prefix }}
{{- range $key := keys $table | sortAlpha }}
{{- $value := index $table $key }}
{{- if not (kindIs "map" $value) }}
{{ include "strata.toml.key" $key }} = {{ include "strata.toml.value" $value }}
{{- end }}
{{- end }}
{{- range $key := keys $table | sortAlpha }}
{{- $value := index $table $key }}
{{- if kindIs "map" $value }}
{{- $name := include "strata.toml.key" $key }}
{{- if $prefix }}{{ $name = printf "%s.%s" $prefix $name }}{{ end }}

[{{ $name }}]
{{- include "strata.toml.table" (dict "table" $value "prefix" $name) }}
{{- end }}
{{- end }}
{{- end }}

{{/* A role's TOML file: `config` merged with <role>.config, plus `roles = [role]`. */}}
{{- define "strata.roleToml" -}}
{{- $root := .root }}
{{- $roleValues := index $root.Values .role }}
{{- $merged := mergeOverwrite (deepCopy (default dict $root.Values.config)) (deepCopy (default dict $roleValues.config)) }}
{{- $_ := set $merged "roles" (list .role) }}
{{- if has .role (list "ingest" "gateway") }}
{{- /* In the file, not the environment: an all-digit AE title would be read as a number. */}}
{{- $dimse := default dict (get $merged "dimse") }}
{{- $_ := set $dimse "ae_title" $roleValues.aeTitle }}
{{- $_ := set $merged "dimse" $dimse }}
{{- end -}}
# Strata configuration of the {{ .role }} role (rendered by the Helm chart). Environment
# variables STRATA__* set by the chart override these keys; see helm/strata/README.md.
{{- include "strata.toml.table" (dict "table" $merged "prefix" "") }}
{{ end }}

{{/* OTEL_RESOURCE_ATTRIBUTES for a role. */}}
{{- define "strata.otelResourceAttributes" -}}
{{- $attributes := list "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.pod.name=$(POD_NAME)" "service.instance.id=$(POD_NAME)" (printf "service.namespace=%s" (include "strata.fullname" .root)) (printf "service.version=%s" .root.Chart.AppVersion) }}
{{- with .root.Values.otel.resourceAttributes }}{{ $attributes = append $attributes . }}{{ end }}
{{- join "," $attributes }}
{{- end }}

{{/* The container environment of a role (and, with role "migrate", of the migrate Job). */}}
{{- define "strata.env" -}}
{{- $root := .root }}
{{- $role := .role -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- if ne $role "migrate" }}
- name: STRATA_CONFIG
  value: /etc/strata/strata.toml
{{- end }}
- name: STRATA__DATA_DIR
  value: /var/lib/strata
- name: STRATA__CATALOG__URI
  value: {{ include "strata.catalogUri" $root | quote }}
- name: STRATA__CATALOG__PASSWORD_FILE
  value: /run/secrets/strata/catalog/password
{{- if ne $role "migrate" }}
- name: STRATA__CATALOG__AUTO_MIGRATE
  value: {{ ternary "false" "true" $root.Values.migrate.enabled | quote }}
- name: STRATA__HTTP__ADDR
  value: "0.0.0.0:8080"
- name: STRATA__DRAIN_TIMEOUT_SECONDS
  value: {{ $root.Values.drainTimeoutSeconds | quote }}
- name: STRATA__STORAGE__URI
  value: {{ include "strata.storageUri" $root | quote }}
{{- with $root.Values.s3.endpoint }}
- name: STRATA__STORAGE__S3__ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with $root.Values.s3.region }}
- name: STRATA__STORAGE__S3__REGION
  value: {{ . | quote }}
{{- end }}
- name: STRATA__STORAGE__S3__PATH_STYLE
  value: {{ $root.Values.s3.pathStyle | quote }}
- name: STRATA__STORAGE__S3__ALLOW_HTTP
  value: {{ $root.Values.s3.allowHttp | quote }}
{{- if $root.Values.s3.existingSecret }}
- name: STRATA__STORAGE__S3__ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.s3.existingSecret }}
      key: {{ $root.Values.s3.accessKeyIdKey }}
- name: STRATA__STORAGE__S3__SECRET_ACCESS_KEY_FILE
  value: /run/secrets/strata/s3/secret-access-key
{{- end }}
{{- if $root.Values.auth.existingSecret }}
- name: STRATA__AUTH__TOKENS_FILE
  value: /run/secrets/strata/auth/tokens
{{- end }}
{{- if include "strata.hasDimse" . }}
- name: STRATA__DIMSE__ENABLED
  value: "true"
- name: STRATA__DIMSE__ADDR
  value: "0.0.0.0:11112"
{{- if $root.Values.dicomTls.existingSecret }}
- name: STRATA__DIMSE__TLS_CERT_FILE
  value: /run/secrets/strata/dicom-tls/cert.pem
- name: STRATA__DIMSE__TLS_KEY_FILE
  value: /run/secrets/strata/dicom-tls/key.pem
{{- if $root.Values.dicomTls.clientCaKey }}
- name: STRATA__DIMSE__TLS_CLIENT_CA_FILE
  value: /run/secrets/strata/dicom-tls/client-ca.pem
{{- end }}
{{- if $root.Values.dicomTls.peerCaKey }}
- name: STRATA__DIMSE__TLS_PEER_CA_FILE
  value: /run/secrets/strata/dicom-tls/peer-ca.pem
{{- end }}
{{- end }}
{{- else }}
- name: STRATA__DIMSE__ENABLED
  value: "false"
{{- end }}
{{- if and (eq $role "gateway") $root.Values.search.enabled }}
- name: STRATA__SEARCH__URL
  value: {{ printf "http://%s:%v" (include "strata.roleName" (dict "root" $root "role" "search")) $root.Values.search.service.port | quote }}
{{- end }}
{{- if eq $role "search" }}
- name: STRATA__SEARCH__INDEX_DIR
  value: /var/lib/strata/search
{{- end }}
{{- end }}
{{- if $root.Values.otel.enabled }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "strata-%s" $role | quote }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ required "otel.endpoint is required when otel.enabled is true" $root.Values.otel.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $root.Values.otel.protocol | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $root.Values.otel.tracesSampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $root.Values.otel.tracesSamplerArg | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ include "strata.otelResourceAttributes" . | quote }}
{{- else }}
- name: OTEL_SDK_DISABLED
  value: "true"
{{- end }}
{{- with $root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- if ne $role "migrate" }}
{{- with (index $root.Values $role).extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Secret volumes: the catalog password and (when set) the S3 secret access key. */}}
{{- define "strata.secretVolumes" -}}
{{- $root := .root -}}
- name: catalog-password
  secret:
    secretName: {{ required "postgresql.existingSecret is required" $root.Values.postgresql.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $root.Values.postgresql.passwordKey }}
        path: password
{{- if and (ne .role "migrate") $root.Values.s3.existingSecret }}
- name: s3-credentials
  secret:
    secretName: {{ $root.Values.s3.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $root.Values.s3.secretAccessKeyKey }}
        path: secret-access-key
{{- end }}
{{- if and (include "strata.hasDimse" .) $root.Values.dicomTls.existingSecret }}
- name: dicom-tls
  secret:
    secretName: {{ $root.Values.dicomTls.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $root.Values.dicomTls.certKey }}
        path: cert.pem
      - key: {{ $root.Values.dicomTls.keyKey }}
        path: key.pem
      {{- with $root.Values.dicomTls.clientCaKey }}
      - key: {{ . }}
        path: client-ca.pem
      {{- end }}
      {{- with $root.Values.dicomTls.peerCaKey }}
      - key: {{ . }}
        path: peer-ca.pem
      {{- end }}
{{- end }}
{{- if and (ne .role "migrate") $root.Values.auth.existingSecret }}
- name: auth-tokens
  secret:
    secretName: {{ $root.Values.auth.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $root.Values.auth.tokensKey }}
        path: tokens
{{- end }}
{{- end }}

{{- define "strata.secretVolumeMounts" -}}
- name: catalog-password
  mountPath: /run/secrets/strata/catalog
  readOnly: true
{{- if and (ne .role "migrate") .root.Values.s3.existingSecret }}
- name: s3-credentials
  mountPath: /run/secrets/strata/s3
  readOnly: true
{{- end }}
{{- if and (ne .role "migrate") .root.Values.auth.existingSecret }}
- name: auth-tokens
  mountPath: /run/secrets/strata/auth
  readOnly: true
{{- end }}
{{- if and (include "strata.hasDimse" .) .root.Values.dicomTls.existingSecret }}
- name: dicom-tls
  mountPath: /run/secrets/strata/dicom-tls
  readOnly: true
{{- end }}
{{- end }}

{{/* An emptyDir source from {sizeLimit, medium} as flow YAML ({} when both are empty). */}}
{{- define "strata.emptyDir" -}}
{{- $source := dict }}
{{- with .sizeLimit }}{{ $_ := set $source "sizeLimit" . }}{{ end }}
{{- with .medium }}{{ $_ := set $source "medium" . }}{{ end }}
{{- toJson $source }}
{{- end }}

{{/* A role value, falling back to the chart-wide value of the same name. */}}
{{- define "strata.roleOrGlobal" -}}
{{- $roleValue := index (index .root.Values .role) .key }}
{{- $value := ternary $roleValue (index .root.Values .key) (not (empty $roleValue)) }}
{{- with $value }}{{ toYaml . }}{{ end }}
{{- end }}

{{/* The pod template of a role's Deployment or StatefulSet. */}}
{{- define "strata.podTemplate" -}}
{{- $root := .root }}
{{- $role := .role }}
{{- $values := index $root.Values $role }}
{{- $ctx := dict "root" $root "role" $role -}}
metadata:
  labels:
    {{- include "strata.roleLabels" $ctx | nindent 4 }}
    {{- with $root.Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "strata.roleToml" $ctx | sha256sum }}
    {{- with $root.Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "strata.serviceAccountName" $root }}
  automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
  {{- with (default $root.Values.priorityClassName $values.priorityClassName) }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with include "strata.roleOrGlobal" (dict "root" $root "role" $role "key" "nodeSelector") }}
  nodeSelector:
    {{- . | nindent 4 }}
  {{- end }}
  {{- with include "strata.roleOrGlobal" (dict "root" $root "role" $role "key" "tolerations") }}
  tolerations:
    {{- . | nindent 4 }}
  {{- end }}
  {{- with include "strata.roleOrGlobal" (dict "root" $root "role" $role "key" "affinity") }}
  affinity:
    {{- . | nindent 4 }}
  {{- end }}
  {{- with include "strata.roleOrGlobal" (dict "root" $root "role" $role "key" "topologySpreadConstraints") }}
  topologySpreadConstraints:
    {{- . | nindent 4 }}
  {{- end }}
  containers:
    - name: strata
      image: {{ include "strata.image" $root | quote }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args:
        - --log-format
        - {{ $root.Values.logFormat | quote }}
        - serve
        - --roles
        - {{ $role }}
      env:
        {{- include "strata.env" $ctx | nindent 8 }}
      {{- with $root.Values.extraEnvFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        - name: http
          containerPort: 8080
          protocol: TCP
        {{- if include "strata.hasDimse" $ctx }}
        - name: dimse
          containerPort: 11112
          protocol: TCP
        {{- end }}
      startupProbe:
        httpGet:
          path: /livez
          port: http
        periodSeconds: {{ $values.startupProbe.periodSeconds }}
        failureThreshold: {{ $values.startupProbe.failureThreshold }}
      livenessProbe:
        httpGet:
          path: /livez
          port: http
        periodSeconds: {{ $values.livenessProbe.periodSeconds }}
        timeoutSeconds: {{ $values.livenessProbe.timeoutSeconds }}
        failureThreshold: {{ $values.livenessProbe.failureThreshold }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        periodSeconds: {{ $values.readinessProbe.periodSeconds }}
        timeoutSeconds: {{ $values.readinessProbe.timeoutSeconds }}
        failureThreshold: {{ $values.readinessProbe.failureThreshold }}
      {{- if gt (int $root.Values.preStopSleepSeconds) 0 }}
      lifecycle:
        preStop:
          sleep:
            seconds: {{ int $root.Values.preStopSleepSeconds }}
      {{- end }}
      {{- with $values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: config
          mountPath: /etc/strata
          readOnly: true
        - name: data
          mountPath: /var/lib/strata
        - name: tmp
          mountPath: /tmp
        {{- include "strata.secretVolumeMounts" $ctx | nindent 8 }}
        {{- with $root.Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "strata.fullname" $root }}
        items:
          - key: {{ printf "%s.toml" $role }}
            path: strata.toml
    {{- if not (and (eq $role "search") (include "strata.searchIsStatefulSet" $root)) }}
    - name: data
      emptyDir: {{ include "strata.emptyDir" $values.dataVolume }}
    {{- end }}
    - name: tmp
      emptyDir:
        sizeLimit: 1Gi
    {{- include "strata.secretVolumes" $ctx | nindent 4 }}
    {{- with $root.Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
