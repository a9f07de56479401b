{{/*
Names. With the release called "pmkeys" every object is pmkeys-<component>, which is what the
Vault role examples in deploy/vault/ bind to.
*/}}
{{- define "pmkeys.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "pmkeys.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>": Deployments, Services, ServiceAccounts and RBAC objects. */}}
{{- define "pmkeys.component" -}}
{{- printf "%s-%s" (include "pmkeys.fullname" .root) .component -}}
{{- end -}}

{{- define "pmkeys.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "pmkeys.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pmkeys
{{- end -}}

{{/* Selector labels of one component: dict "root" $ "component" "operator" */}}
{{- define "pmkeys.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pmkeys.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "pmkeys.componentLabels" -}}
{{ include "pmkeys.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "pmkeys.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Cluster-wide (no watchNamespaces) or one RoleBinding per watched namespace. */}}
{{- define "pmkeys.clusterwide" -}}
{{- if not .Values.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{- define "pmkeys.redisEnabled" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret.name -}}true{{- end -}}
{{- end -}}

{{- define "pmkeys.verifierURL" -}}
{{- if .Values.ui.verifierURL -}}
{{- .Values.ui.verifierURL -}}
{{- else if .Values.verifier.enabled -}}
{{- printf "http://%s.%s.svc:%d" (include "pmkeys.component" (dict "root" . "component" "verifier")) .Release.Namespace (int .Values.verifier.service.port) -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by every component. */}}
{{- define "pmkeys.commonEnv" -}}
- name: PMKEYS_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: PYTHONUNBUFFERED
  value: "1"
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
- name: HOME
  value: /tmp
{{- end -}}

{{/* Vault settings of a component that talks to Vault: dict "root" $ "role" "<vault role>" */}}
{{- define "pmkeys.vaultEnv" -}}
{{- $v := .root.Values.vault -}}
- name: PMKEYS_VAULT__ADDR
  value: {{ $v.addr | quote }}
- name: PMKEYS_VAULT__AUTH
  value: {{ $v.auth.method | quote }}
{{- if eq $v.auth.method "kubernetes" }}
- name: PMKEYS_VAULT__ROLE
  value: {{ .role | quote }}
- name: PMKEYS_VAULT__AUTH_MOUNT
  value: {{ $v.auth.mount | quote }}
{{- else }}
- name: PMKEYS_VAULT__TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $v.auth.tokenSecret.name }}
      key: {{ $v.auth.tokenSecret.key }}
{{- end }}
- name: PMKEYS_VAULT__KV_MOUNT
  value: {{ $v.kvMount | quote }}
- name: PMKEYS_VAULT__PREFIX
  value: {{ $v.prefix | quote }}
- name: PMKEYS_VAULT__TIMEOUT
  value: {{ $v.timeout | quote }}
{{- if or $v.caCert.secretName $v.caCert.configMapName }}
- name: PMKEYS_VAULT__CA_CERT
  value: /etc/pmkeys/vault-ca/{{ $v.caCert.key }}
{{- end }}
{{- end -}}

{{- define "pmkeys.vaultCaVolume" -}}
{{- $ca := .Values.vault.caCert -}}
{{- if $ca.secretName }}
- name: vault-ca
  secret:
    secretName: {{ $ca.secretName }}
    items:
      - key: {{ $ca.key }}
        path: {{ $ca.key }}
{{- else if $ca.configMapName }}
- name: vault-ca
  configMap:
    name: {{ $ca.configMapName }}
    items:
      - key: {{ $ca.key }}
        path: {{ $ca.key }}
{{- end }}
{{- end -}}

{{- define "pmkeys.vaultCaMount" -}}
{{- if or .Values.vault.caCert.secretName .Values.vault.caCert.configMapName }}
- name: vault-ca
  mountPath: /etc/pmkeys/vault-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* Scheduling and security fields of a pod spec: dict "root" $ "c" .Values.<component> */}}
{{- define "pmkeys.podCommon" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Pod template metadata: dict "root" $ "component" "verifier" "c" .Values.verifier */}}
{{- define "pmkeys.podMetadata" -}}
metadata:
  labels:
    {{- include "pmkeys.selectorLabels" . | nindent 4 }}
    app.kubernetes.io/part-of: pmkeys
    {{- with .c.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .c.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* Audit store settings of a component: dict "root" $ "key" "<key in audit.existingSecret>" */}}
{{- define "pmkeys.auditEnv" -}}
{{- $a := .root.Values.audit -}}
{{- if $a.existingSecret }}
- name: PMKEYS_AUDIT__DSN
  valueFrom:
    secretKeyRef:
      name: {{ $a.existingSecret | quote }}
      key: {{ .key | quote }}
{{- end }}
- name: PMKEYS_AUDIT__STREAM
  value: {{ toJson $a.stream | quote }}
{{- end -}}
