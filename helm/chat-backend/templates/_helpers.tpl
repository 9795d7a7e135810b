{{/*
Chart name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "chat-backend.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name, plus the chart name unless the release name already contains it.
Truncated to 48 characters so "<fullname>-agent-worker" stays a valid DNS label.
*/}}
{{- define "chat-backend.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "chat-backend.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource.
*/}}
{{- define "chat-backend.labels" -}}
helm.sh/chart: {{ include "chat-backend.chart" . }}
{{ include "chat-backend.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "chat-backend.name" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels selecting this release's pods and services.
*/}}
{{- define "chat-backend.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chat-backend.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Per-component helpers take a dict: (dict "root" $ "component" "gateway").
*/}}
{{- define "chat-backend.componentName" -}}
{{- printf "%s-%s" (include "chat-backend.fullname" .root) .component }}
{{- end }}

{{- define "chat-backend.componentLabels" -}}
{{ include "chat-backend.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "chat-backend.componentSelectorLabels" -}}
{{ include "chat-backend.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "chat-backend.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "chat-backend.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: repository@digest, else repository:tag (tag defaults to the appVersion).
*/}}
{{- define "chat-backend.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding JWT_SECRET, DATABASE_URL, REDIS_URL and OPENAI_API_KEY.
*/}}
{{- define "chat-backend.secretName" -}}
{{- default (include "chat-backend.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/*
The JWT secret: the value given, else the one already stored in the release's Secret (so
upgrades keep it), else a new random one.
*/}}
{{- define "chat-backend.jwtSecret" -}}
{{- if .Values.secrets.jwtSecret }}
{{- .Values.secrets.jwtSecret }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "chat-backend.fullname" .) | default dict }}
{{- $data := get $existing "data" | default dict }}
{{- if hasKey $data "JWT_SECRET" }}
{{- index $data "JWT_SECRET" | b64dec }}
{{- else }}
{{- randAlphaNum 64 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Whether the gateway gets REDIS_URL (shared rate limits).
*/}}
{{- define "chat-backend.gatewayUsesRedis" -}}
{{- if and .Values.redis.enabled .Values.gateway.redisRateLimits }}true{{ end }}
{{- end }}

{{/*
Whether the agent-workers get OPENAI_API_KEY.
*/}}
{{- define "chat-backend.workerHasApiKey" -}}
{{- if .Values.secrets.existingSecret }}
{{- if .Values.agentWorker.llm.apiKeyInExistingSecret }}true{{ end }}
{{- else if .Values.agentWorker.llm.apiKey }}true{{ end }}
{{- end }}

{{/*
Secret keys a component reads, one per line.
*/}}
{{- define "chat-backend.secretKeys" -}}
{{- $root := .root }}
{{- if eq .component "gateway" }}
JWT_SECRET
{{ if include "chat-backend.gatewayUsesRedis" $root }}REDIS_URL{{ end }}
{{- else if eq .component "chat-core" }}
JWT_SECRET
DATABASE_URL
{{ if $root.Values.redis.enabled }}REDIS_URL{{ end }}
{{- else if eq .component "agent-worker" }}
JWT_SECRET
{{ if include "chat-backend.workerHasApiKey" $root }}OPENAI_API_KEY{{ end }}
{{- else if eq .component "migrate" }}
DATABASE_URL
{{- end }}
{{- end }}

{{/*
Secret env of a component: <VAR>_FILE pointing into the secrets volume, or <VAR> from
secretKeyRef when secrets.mountAsFiles is false.
*/}}
{{- define "chat-backend.secretEnv" -}}
{{- $root := .root }}
{{- $secretName := .secretName | default (include "chat-backend.secretName" $root) }}
{{- range $key := splitList "\n" (include "chat-backend.secretKeys" .) | compact }}
{{- if $root.Values.secrets.mountAsFiles }}
- name: {{ $key }}_FILE
  value: /var/run/secrets/chat/{{ $key }}
{{- else }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ $secretName }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The secrets volume of a component (only the keys it reads), when mounting as files.
*/}}
{{- define "chat-backend.secretVolume" -}}
{{- $root := .root }}
{{- $keys := splitList "\n" (include "chat-backend.secretKeys" .) | compact }}
{{- if and $root.Values.secrets.mountAsFiles $keys }}
- name: secrets
  secret:
    secretName: {{ .secretName | default (include "chat-backend.secretName" $root) }}
    defaultMode: 0440
    items:
      {{- range $key := $keys }}
      - key: {{ $key }}
        path: {{ $key }}
      {{- end }}
{{- end }}
{{- end }}

{{- define "chat-backend.secretVolumeMount" -}}
{{- $keys := splitList "\n" (include "chat-backend.secretKeys" .) | compact }}
{{- if and .root.Values.secrets.mountAsFiles $keys }}
- name: secrets
  mountPath: /var/run/secrets/chat
  readOnly: true
{{- end }}
{{- end }}

{{/*
Non-secret environment of a component (its ConfigMap data), sorted by name. Settings the chart
manages (listen addresses, service URLs) win over the component's `env` map.
Takes (dict "root" $ "component" "gateway"|"chat-core"|"agent-worker").
*/}}
{{- define "chat-backend.env" -}}
{{- $root := .root }}
{{- $values := index (dict "gateway" $root.Values.gateway "chat-core" $root.Values.chatCore "agent-worker" $root.Values.agentWorker) .component }}
{{- $env := dict
  "LOG_FORMAT" $root.Values.log.format
  "RUST_LOG" $values.rustLog
  "SHUTDOWN_TIMEOUT_SECS" $root.Values.shutdown.timeoutSeconds
  "OTEL_SERVICE_NAME" .component
}}
{{- with $root.Values.otel }}
{{- if .endpoint }}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_ENDPOINT" .endpoint }}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_PROTOCOL" .protocol }}
{{- $_ := set $env "OTEL_TRACES_SAMPLER" .sampler }}
{{- $_ := set $env "OTEL_TRACES_SAMPLER_ARG" .samplerArg }}
{{- end }}
{{- end }}
{{- if eq .component "gateway" }}
{{- $trust := $values.trustForwardedFor }}
{{- if kindIs "invalid" $trust }}{{ $trust = $root.Values.ingress.enabled }}{{ end }}
{{- $_ := set $env "GATEWAY_LISTEN" "0.0.0.0:3006" }}
{{- $_ := set $env "ADMIN_LISTEN" "0.0.0.0:9000" }}
{{- $_ := set $env "CHAT_CORE_URL" (printf "http://%s:50051" (include "chat-backend.componentName" (dict "root" $root "component" "chat-core"))) }}
{{- $_ := set $env "CHAT_CORE_RESOLVE_SECS" $values.chatCoreResolveSeconds }}
{{- $_ := set $env "TRUST_FORWARDED_FOR" (ternary "true" "false" $trust) }}
{{- with $values.allowedOrigins }}{{ $_ := set $env "ALLOWED_ORIGINS" (join "," .) }}{{ end }}
{{- if $root.Values.internalTls.enabled }}
{{- $_ := set $env "CHAT_CORE_URL" (printf "https://%s:50051" (include "chat-backend.componentName" (dict "root" $root "component" "chat-core"))) }}
{{- $_ := set $env "CHAT_CORE_TLS_CA_FILE" "/etc/chat/tls/ca.crt" }}
{{- $_ := set $env "CHAT_CORE_TLS_CERT_FILE" "/etc/chat/tls/tls.crt" }}
{{- $_ := set $env "CHAT_CORE_TLS_KEY_FILE" "/etc/chat/tls/tls.key" }}
{{- end }}
{{- else if eq .component "chat-core" }}
{{- $_ := set $env "CHAT_CORE_LISTEN" "0.0.0.0:50051" }}
{{- $_ := set $env "ADMIN_LISTEN" "0.0.0.0:9001" }}
{{- $_ := set $env "AGENT_WORKER_URLS" (printf "http://%s:50052" (include "chat-backend.componentName" (dict "root" $root "component" "agent-worker"))) }}
{{- $_ := set $env "AGENT_WORKER_RESOLVE_SECS" $values.agentWorkerResolveSeconds }}
{{- if $root.Values.internalTls.enabled }}
{{- $_ := set $env "AGENT_WORKER_URLS" (printf "https://%s:50052" (include "chat-backend.componentName" (dict "root" $root "component" "agent-worker"))) }}
{{- $_ := set $env "AGENT_WORKER_TLS_CA_FILE" "/etc/chat/tls/ca.crt" }}
{{- $_ := set $env "AGENT_WORKER_TLS_CERT_FILE" "/etc/chat/tls/tls.crt" }}
{{- $_ := set $env "AGENT_WORKER_TLS_KEY_FILE" "/etc/chat/tls/tls.key" }}
{{- end }}
{{- else if eq .component "agent-worker" }}
{{- $_ := set $env "AGENT_WORKER_LISTEN" "0.0.0.0:50052" }}
{{- $_ := set $env "ADMIN_LISTEN" "0.0.0.0:9002" }}
{{- $_ := set $env "LLM_MODEL" $values.llm.model }}
{{- if $values.agentsConfig }}{{ $_ := set $env "AGENTS_CONFIG" "/etc/chat/agents/agents.toml" }}{{ end }}
{{- if $values.llm.baseUrl }}{{ $_ := set $env "LLM_BASE_URL" $values.llm.baseUrl }}{{ end }}
{{- end }}
{{- if and $root.Values.internalTls.enabled (ne .component "gateway") }}
{{- $_ := set $env "GRPC_TLS_CERT_FILE" "/etc/chat/tls/tls.crt" }}
{{- $_ := set $env "GRPC_TLS_KEY_FILE" "/etc/chat/tls/tls.key" }}
{{- $_ := set $env "GRPC_TLS_CLIENT_CA_FILE" "/etc/chat/tls/ca.crt" }}
{{- end }}
{{- range $name, $value := merge $env (deepCopy ($values.env | default dict)) }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/*
Default topology spread of a component: across nodes when possible.
*/}}
{{- define "chat-backend.topologySpread" -}}
{{- $custom := index .values "topologySpreadConstraints" }}
{{- if kindIs "invalid" $custom }}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "chat-backend.componentSelectorLabels" . | nindent 6 }}
{{- else if $custom }}
{{- toYaml $custom }}
{{- end }}
{{- end }}

{{/*
Checksum of a component's configuration: its ConfigMap data (plus the agents file).
*/}}
{{- define "chat-backend.configChecksum" -}}
{{- $env := include "chat-backend.env" . }}
{{- if eq .component "agent-worker" }}
{{- printf "%s\n%s" $env .root.Values.agentWorker.agentsConfig | sha256sum }}
{{- else }}
{{- $env | sha256sum }}
{{- end }}
{{- end }}

{{/*
Checksum of the secret values (not of a generated JWT secret, which is kept across upgrades),
or of the existing Secret's name.
*/}}
{{- define "chat-backend.secretChecksum" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret | sha256sum }}
{{- else }}
{{- list .Values.secrets .Values.postgres.url .Values.redis .Values.agentWorker.llm.apiKey | toJson | sha256sum }}
{{- end }}
{{- end }}

{{/*
The three services: name, values key, main port and admin port, and the gRPC health service
their readiness probe asks about (the HTTP gateway has none).
*/}}
{{- define "chat-backend.components" -}}
- name: gateway
  valuesKey: gateway
  portName: http
  port: 3006
  adminPort: 9000
  headless: false
  autoscaling: true
- name: chat-core
  valuesKey: chatCore
  portName: grpc
  port: 50051
  adminPort: 9001
  headless: true
  autoscaling: false
  grpcService: chat.v1.ChatService
- name: agent-worker
  valuesKey: agentWorker
  portName: grpc
  port: 50052
  adminPort: 9002
  headless: true
  autoscaling: true
  grpcService: agent.v1.AgentWorker
{{- end }}
