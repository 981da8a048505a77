{{/* Names, labels, the TLS material, the webhook entries and the config: each defined once. */}}

{{- define "kubefence.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubefence.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kubefence.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubefence.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubefence.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "kubefence.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "kubefence.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "kubefence.fullname" .) -}}
{{- end -}}

{{- define "kubefence.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "kubefence.tlsSecretName" -}}
{{- if eq .Values.certs.mode "secret" -}}
{{- .Values.certs.secret.name -}}
{{- else -}}
{{- printf "%s-tls" (include "kubefence.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "kubefence.serviceDNSNames" -}}
{{- $svc := include "kubefence.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- toJson (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns)) -}}
{{- end -}}

{{/*
The chart-generated TLS material as JSON {ca, cert, key} (base64 PEM), made once per render and
memoised on the root context, so the Secret, the caBundle and the config see the same CA. An existing
Secret (lookup) is kept: upgrades do not rotate the CA under a running webhook.
*/}}
{{- define "kubefence.generatedTLS" -}}
{{- if not (hasKey . "kubefenceGeneratedTLS") -}}
{{- $name := include "kubefence.tlsSecretName" . -}}
{{- $old := lookup "v1" "Secret" .Release.Namespace $name -}}
{{- $data := dict -}}
{{- if and $old $old.data -}}
{{- $data = $old.data -}}
{{- end -}}
{{- if and (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") -}}
{{- $_ := set . "kubefenceGeneratedTLS" (dict "ca" (index $data "ca.crt") "cert" (index $data "tls.crt") "key" (index $data "tls.key")) -}}
{{- else -}}
{{- $days := int .Values.certs.generated.days -}}
{{- $ca := genCAWithKey (printf "%s-ca" (include "kubefence.fullname" .)) $days (genPrivateKey "ecdsa") -}}
{{- $dns := include "kubefence.serviceDNSNames" . | fromJsonArray -}}
{{- $cert := genSignedCertWithKey (index $dns 2) nil $dns $days $ca (genPrivateKey "ecdsa") -}}
{{- $_ := set . "kubefenceGeneratedTLS" (dict "ca" ($ca.Cert | b64enc) "cert" ($cert.Cert | b64enc) "key" ($cert.Key | b64enc)) -}}
{{- end -}}
{{- end -}}
{{- toJson (get . "kubefenceGeneratedTLS") -}}
{{- end -}}

{{/* The caBundle of the webhook configuration; empty in cert-manager mode (cainjector fills it). */}}
{{- define "kubefence.caBundle" -}}
{{- if eq .Values.certs.mode "generated" -}}
{{- (include "kubefence.generatedTLS" . | fromJson).ca -}}
{{- else if eq .Values.certs.mode "secret" -}}
{{- .Values.certs.secret.caBundle -}}
{{- end -}}
{{- end -}}

{{/* Namespaces excluded from the webhook: the values list plus the release namespace. */}}
{{- define "kubefence.excludedNamespaces" -}}
{{- toJson (append .Values.webhook.excludedNamespaces .Release.Namespace | uniq) -}}
{{- end -}}

{{- define "kubefence.webhookProtection" -}}
{{- $enabled := .Values.webhookProtection.enabled -}}
{{- if eq (toString $enabled) "auto" -}}
{{- if .Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy" -}}true{{- end -}}
{{- else if eq (toString $enabled) "true" -}}true
{{- end -}}
{{- end -}}

{{/*
The webhook entries of the ValidatingWebhookConfiguration, as a YAML list: one source for the
object itself and for the config's drift.expected. Every field the API server would default is
spelled out, so what is stored equals what is rendered.
*/}}
{{- define "kubefence.webhooks" -}}
{{- $caBundle := include "kubefence.caBundle" . -}}
{{- $conditions := list -}}
{{- if .Values.webhook.breakGlassGroup -}}
{{- $conditions = append $conditions (dict "name" "break-glass" "expression" (printf "!has(request.userInfo.groups) || !(%s in request.userInfo.groups)" (.Values.webhook.breakGlassGroup | toJson))) -}}
{{- end -}}
{{- if .Values.webhook.skipUnchangedUpdates -}}
{{- $conditions = append $conditions (dict "name" "spec-changed" "expression" "request.operation != 'UPDATE' || request.resource.resource == 'namespaces' || !has(object.spec) || !has(oldObject.spec) || object.spec != oldObject.spec") -}}
{{- end -}}
{{- $conditions = concat $conditions .Values.webhook.matchConditions -}}
- name: {{ .Values.webhook.name }}
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: {{ .Values.webhook.failurePolicy }}
  matchPolicy: Equivalent
  timeoutSeconds: {{ .Values.webhook.timeoutSeconds }}
  clientConfig:
    service:
      name: {{ include "kubefence.fullname" . }}
      namespace: {{ .Release.Namespace }}
      path: /validate
      port: {{ .Values.service.port }}
    {{- if $caBundle }}
    caBundle: {{ $caBundle }}
    {{- end }}
  namespaceSelector:
    matchExpressions:
      - key: kubernetes.io/metadata.name
        operator: NotIn
        values: {{ include "kubefence.excludedNamespaces" . }}
  objectSelector: {}
  rules:
    {{- toYaml .Values.webhook.rules | nindent 4 }}
  {{- with $conditions }}
  matchConditions:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* kubefence's config file (README.md, "Configuration"), from the values. */}}
{{- define "kubefence.config" -}}
{{- $modes := dict
  "enforce" (dict "enforce" "enforce" "warn" "warn")
  "warn" (dict "enforce" "warn" "warn" "warn")
  "audit" (dict "enforce" "audit" "warn" "audit") -}}
{{- $m := index $modes .Values.mode -}}
{{- $cfg := dict -}}
{{- $names := prepend .Values.webhook.previousNames .Values.webhook.name | uniq -}}
{{- if eq (len $names) 1 -}}
{{- $_ := set $cfg "webhookName" .Values.webhook.name -}}
{{- else -}}
{{- $_ := set $cfg "webhookNames" $names -}}
{{- end -}}
{{- $_ := set $cfg "defaultDeny" (dict "mode" $m.enforce "allowAll" $m.enforce "allowAllSelected" $m.warn) -}}
{{- $_ := set $cfg "hostNetwork" (dict "mode" $m.enforce "hostPort" $m.warn "hostPID" $m.enforce "hostPIDPtrace" $m.enforce "hostPath" $m.enforce "otherHostPaths" $m.warn "privileged" $m.enforce "capabilities" $m.enforce "probeHost" $m.enforce) -}}
{{- $scope := dict "mode" $m.enforce -}}
{{- if .Values.auditPolicy -}}
{{- $_ := set $scope "policyFile" "audit-policy.yaml" -}}
{{- end -}}
{{- $_ := set $cfg "auditScope" $scope -}}
{{- $_ := set $cfg "exemptions" (dict
  "namespaces" (include "kubefence.excludedNamespaces" . | fromJsonArray)
  "users" .Values.exemptions.users
  "groups" .Values.exemptions.groups) -}}
{{- $cfg = mergeOverwrite $cfg (deepCopy .Values.config) -}}
{{- if .Values.drift.renderIntoConfig -}}
{{- $protected := include "kubefence.webhookProtection" . -}}
{{- $expected := include "kubefence.webhooks" . | fromYamlArray -}}
{{- $_ := set $cfg "drift" (dict
  "webhookConfiguration" (include "kubefence.fullname" .)
  "admissionPolicy" (ternary (printf "%s-protect-webhook" (include "kubefence.fullname" .)) nil (eq $protected "true"))
  "binding" (ternary (printf "%s-protect-webhook" (include "kubefence.fullname" .)) nil (eq $protected "true"))
  "ignoreCABundle" (eq .Values.certs.mode "certManager")
  "expected" $expected) -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* The container's arguments (after the image's ENTRYPOINT `kubefence serve`); the image smoke test runs exactly these. */}}
{{- define "kubefence.args" -}}
- --config=/etc/kubefence/config/config.yaml
- --cert=/etc/kubefence/tls/tls.crt
- --key=/etc/kubefence/tls/tls.key
- --port={{ .Values.containerPort }}
{{- if .Values.clientCA.configMap }}
- --client-ca=/etc/kubefence/client-ca/{{ .Values.clientCA.key }}
{{- with .Values.clientCA.subject }}
- --client-subject={{ . }}
{{- end }}
- --probe-port={{ .Values.probePort }}
{{- end }}
{{- if gt (int .Values.workers) 1 }}
- --workers={{ .Values.workers }}
{{- end }}
{{- if .Values.leaderElection.enabled }}
- --leader-election-namespace={{ .Release.Namespace }}
- --leader-election-id={{ include "kubefence.leaseName" . }}
{{- else }}
- --leader-election-namespace=
{{- end }}
{{- if include "kubefence.auditGap" . }}
{{- /* The Service: only the monitor Lease holder is Ready, so it alone gets them. */}}
- --decisions-to=https://{{ include "kubefence.monitorName" . }}.{{ .Release.Namespace }}.svc:{{ .Values.monitor.auditGap.port }}/decisions
- --decisions-ca=/etc/kubefence/monitor-ca/ca.crt
- --decisions-token-file=/etc/kubefence/decisions-token/token
{{- end }}
{{- end -}}

{{/* Whether serve sends its sensitive decisions to the monitor (monitor.auditGap). */}}
{{- define "kubefence.auditGap" -}}
{{- if and .Values.monitor.enabled (gt (float64 .Values.monitor.auditGap.window) 0.0) }}true{{ end -}}
{{- end -}}

{{/* The Secret of the decisions token, and the token (kept across upgrades). */}}
{{- define "kubefence.decisionsTokenName" -}}
{{- printf "%s-decisions" (include "kubefence.monitorName" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "kubefence.decisionsToken" -}}
{{- $old := lookup "v1" "Secret" .Release.Namespace (include "kubefence.decisionsTokenName" .) -}}
{{- if and $old $old.data (hasKey $old.data "token") -}}
{{- index $old.data "token" -}}
{{- else -}}
{{- randAlphaNum 48 | b64enc -}}
{{- end -}}
{{- end -}}

{{/* The notifier Lease (leader election): leaderElection.leaseName or <fullname>-notifier. */}}
{{- define "kubefence.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (printf "%s-notifier" (include "kubefence.fullname" .)) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The monitor Lease (one active monitor): monitor.leaderElection.leaseName or <fullname>-monitor. */}}
{{- define "kubefence.monitorLeaseName" -}}
{{- .Values.monitor.leaderElection.leaseName | default (printf "%s-monitor" (include "kubefence.fullname" .)) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The ConfigMap the monitor's canary GETs. */}}
{{- define "kubefence.monitorCanaryName" -}}
{{- printf "%s-canary" (include "kubefence.monitorName" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Whether the monitor talks to the API server (Lease, canary): its token is mounted then. */}}
{{- define "kubefence.monitorUsesAPI" -}}
{{- if or .Values.monitor.leaderElection.enabled (gt (float64 .Values.monitor.canary) 0.0) }}true{{ end -}}
{{- end -}}

{{- define "kubefence.monitorName" -}}
{{- printf "%s-monitor" (include "kubefence.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubefence.monitorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "kubefence.name" . }}-monitor
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubefence.monitorTLSSecretName" -}}
{{- if eq .Values.certs.mode "secret" -}}
{{- .Values.monitor.certs.secretName -}}
{{- else -}}
{{- printf "%s-tls" (include "kubefence.monitorName" .) -}}
{{- end -}}
{{- end -}}

{{- define "kubefence.monitorDNSNames" -}}
{{- $svc := include "kubefence.monitorName" . -}}
{{- $ns := .Release.Namespace -}}
{{- toJson (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns)) -}}
{{- end -}}

{{/*
The monitor's generated TLS material as JSON {ca, cert, key} (base64 PEM): its own CA, and a
certificate for the Service's fixed ClusterIP (an IP SAN: the API server dials the address) and
names. Kept across upgrades while the address stays the same (the Secret's annotation says
which address it was made for); made again when the address changes.
*/}}
{{- define "kubefence.monitorGeneratedTLS" -}}
{{- if not (hasKey . "kubefenceMonitorTLS") -}}
{{- $name := include "kubefence.monitorTLSSecretName" . -}}
{{- $ip := .Values.monitor.service.clusterIP -}}
{{- $old := lookup "v1" "Secret" .Release.Namespace $name -}}
{{- $data := dict -}}
{{- $madeFor := "" -}}
{{- if and $old $old.data -}}
{{- $data = $old.data -}}
{{- $madeFor = index ($old.metadata.annotations | default dict) "kubefence.io/monitor-address" | default "" -}}
{{- end -}}
{{- if and (eq $madeFor $ip) (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") -}}
{{- $_ := set . "kubefenceMonitorTLS" (dict "ca" (index $data "ca.crt") "cert" (index $data "tls.crt") "key" (index $data "tls.key")) -}}
{{- else -}}
{{- $days := int .Values.certs.generated.days -}}
{{- $ca := genCAWithKey (printf "%s-ca" (include "kubefence.monitorName" .)) $days (genPrivateKey "ecdsa") -}}
{{- $dns := include "kubefence.monitorDNSNames" . | fromJsonArray -}}
{{- $cert := genSignedCertWithKey $ip (list $ip) $dns $days $ca (genPrivateKey "ecdsa") -}}
{{- $_ := set . "kubefenceMonitorTLS" (dict "ca" ($ca.Cert | b64enc) "cert" ($cert.Cert | b64enc) "key" ($cert.Key | b64enc)) -}}
{{- end -}}
{{- end -}}
{{- toJson (get . "kubefenceMonitorTLS") -}}
{{- end -}}

{{/* A Go-style duration of one unit (`90s`, `10m`, `1h`) in whole seconds, for PromQL. */}}
{{- define "kubefence.seconds" -}}
{{- $d := toString . -}}
{{- if hasSuffix "ms" $d -}}{{- div (trimSuffix "ms" $d | int) 1000 -}}
{{- else if hasSuffix "s" $d -}}{{- trimSuffix "s" $d | int -}}
{{- else if hasSuffix "m" $d -}}{{- mul (trimSuffix "m" $d | int) 60 -}}
{{- else if hasSuffix "h" $d -}}{{- mul (trimSuffix "h" $d | int) 3600 -}}
{{- end -}}
{{- end -}}
