{{/*
Every helper takes a context dict: (dict "root" $ "values" <this chart's values>).
In this chart that is (dict "root" $ "values" .Values); an application chart that has this chart
as a dependency (alias tenantProxy) passes (dict "root" $ "values" .Values.tenantProxy), so
names, checksums and the image come out the same in both places.

Public templates for application charts (sidecar mode):
  mongo-tenant-proxy.sidecar          the init container (restartPolicy: Always), under initContainers:
  mongo-tenant-proxy.sidecarVolumes   its volumes, under volumes:
  mongo-tenant-proxy.podAnnotations   the config checksum, under the pod template's annotations
                                      (rollOnConfigChange: which config changes roll the pods)
*/}}

{{- define "mongo-tenant-proxy.name" -}}
{{- default "mongo-tenant-proxy" .values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{- define "mongo-tenant-proxy.fullname" -}}
{{- if .values.fullnameOverride -}}
{{- .values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "mongo-tenant-proxy.name" . -}}
{{- if contains $name .root.Release.Name -}}
{{- .root.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .root.Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end }}

{{- define "mongo-tenant-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mongo-tenant-proxy.name" . }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{- define "mongo-tenant-proxy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mongo-tenant-proxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .values.image.tag | quote }}
app.kubernetes.io/component: proxy
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{- define "mongo-tenant-proxy.serviceAccountName" -}}
{{- if .values.serviceAccount.create -}}
{{- default (include "mongo-tenant-proxy.fullname" .) .values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .values.serviceAccount.name -}}
{{- end -}}
{{- end }}

{{- define "mongo-tenant-proxy.image" -}}
{{- if .values.image.digest -}}
{{- printf "%s@%s" .values.image.repository .values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .values.image.repository (required "image.tag is required" .values.image.tag | toString) -}}
{{- end -}}
{{- end }}

{{/* The proxy's YAML configuration, as mounted. */}}
{{- define "mongo-tenant-proxy.configYaml" -}}
{{- toYaml (required "config is required (the proxy's YAML configuration)" .values.config) -}}
{{- end }}

{{- define "mongo-tenant-proxy.configChecksum" -}}
{{- include "mongo-tenant-proxy.configYaml" . | sha256sum -}}
{{- end }}

{{/* "true" when the proxy reloads the mounted config file itself (config.reload.watchConfigFile, on by default). */}}
{{- define "mongo-tenant-proxy.hotReload" -}}
{{- $reload := dig "reload" (dict) .values.config -}}
{{- if not (kindIs "map" $reload) }}{{ $reload = dict }}{{ end -}}
{{- ternary "false" "true" (eq (toString (dig "watchConfigFile" true $reload)) "false") -}}
{{- end }}

{{/*
The settings a running proxy cannot reload (src/config/reload.ts, docs/hot-reload.md): each
listener's name, address, TLS on or off and client certificate mode; the upstream; metrics.listen;
identity.maxTenantLabels; isolation.sessionKey; limits.tlsHandshakeTimeoutMS.
*/}}
{{- define "mongo-tenant-proxy.restartOnlyConfigYaml" -}}
{{- $config := .values.config -}}
{{- $listeners := list -}}
{{- range (default (list) $config.listeners) -}}
{{- $tls := ternary .tls (dict) (kindIs "map" .tls) -}}
{{- $listeners = append $listeners (dict "name" .name "listen" .listen "tls" (kindIs "map" .tls) "clientCertificates" (dig "clientCertificates" "none" $tls)) -}}
{{- end -}}
{{- $section := dict -}}
{{- range $name := list "identity" "isolation" "limits" "metrics" "upstream" -}}
{{- $value := get $config $name -}}
{{- $_ := set $section $name (ternary $value (dict) (kindIs "map" $value)) -}}
{{- end -}}
{{- toYaml (dict
  "listeners" $listeners
  "upstream" $section.upstream
  "metrics" $section.metrics
  "identity.maxTenantLabels" (dig "maxTenantLabels" "" $section.identity)
  "isolation.sessionKey" (dig "sessionKey" "" $section.isolation)
  "limits.tlsHandshakeTimeoutMS" (dig "tlsHandshakeTimeoutMS" "" $section.limits)) -}}
{{- end }}

{{/*
Pod template annotations: a config checksum, so changing the config rolls the pods.
rollOnConfigChange: true, any change; false, none (no annotation); auto, any change when the
proxy's hot reload is off, else only changes to settings it cannot reload.
*/}}
{{- define "mongo-tenant-proxy.podAnnotations" -}}
{{- $roll := toString .values.rollOnConfigChange -}}
{{- if not (has $roll (list "true" "false" "auto")) -}}
{{- fail (printf "rollOnConfigChange: %q is not true, false or auto" $roll) -}}
{{- end -}}
{{- if and (eq $roll "auto") (eq (include "mongo-tenant-proxy.hotReload" .) "true") -}}
checksum/mongo-tenant-proxy-restart-config: {{ include "mongo-tenant-proxy.restartOnlyConfigYaml" . | sha256sum }}
{{- else if ne $roll "false" -}}
checksum/mongo-tenant-proxy-config: {{ include "mongo-tenant-proxy.configChecksum" . }}
{{- end -}}
{{- end }}

{{/* The port of a "host:port" address; fails for anything else. */}}
{{- define "mongo-tenant-proxy.port" -}}
{{- $port := regexReplaceAll "^.*:" (toString .address) "" -}}
{{- if or (not (regexMatch "^[0-9]+$" $port)) (eq $port "0") -}}
{{- fail (printf "%s: %q needs a fixed port (host:port, port not 0) so Kubernetes can reach it" .field .address) -}}
{{- end -}}
{{- $port -}}
{{- end }}

{{/* The metrics port, checked: probes and Prometheus reach it on the pod's IP. */}}
{{- define "mongo-tenant-proxy.metricsPort" -}}
{{- $listen := dig "metrics" "listen" "" .values.config | toString -}}
{{- if or (eq $listen "") (eq $listen "off") -}}
{{- fail "config.metrics.listen must be set (e.g. 0.0.0.0:9216): the probes use /healthz and /readyz on it" -}}
{{- end -}}
{{- if regexMatch "^(127\\.|localhost:|\\[::1\\]:)" $listen -}}
{{- fail (printf "config.metrics.listen: %q is loopback-only; use 0.0.0.0:PORT so the kubelet's probes and Prometheus reach it" $listen) -}}
{{- end -}}
{{- include "mongo-tenant-proxy.port" (dict "address" $listen "field" "config.metrics.listen") -}}
{{- end }}

{{/* Port names: "mongodb", "mongodb-1"…, "metrics"; prefixed with "mtp-" in a sidecar. */}}
{{- define "mongo-tenant-proxy.portName" -}}
{{- $base := ternary "mongodb" (printf "mongodb-%d" (int .index)) (eq (int .index) 0) -}}
{{- if .sidecar }}{{ printf "mtp-%s" $base }}{{ else }}{{ $base }}{{ end -}}
{{- end }}

{{- define "mongo-tenant-proxy.metricsPortName" -}}
{{- ternary "mtp-metrics" "metrics" (default false .sidecar) -}}
{{- end }}

{{/* Standalone listeners must be reachable from other pods. */}}
{{- define "mongo-tenant-proxy.checkStandaloneListeners" -}}
{{- $listeners := default (list) .values.config.listeners -}}
{{- if not $listeners -}}
{{- fail "config.listeners: standalone mode needs at least one listener on 0.0.0.0:PORT (the default is loopback-only)" -}}
{{- end -}}
{{- range $i, $l := $listeners -}}
{{- if regexMatch "^(127\\.|localhost:|\\[::1\\]:)" (toString $l.listen) -}}
{{- fail (printf "config.listeners[%d].listen: %q is loopback-only; standalone clients connect over the network (use 0.0.0.0:PORT, or mode: sidecar)" $i $l.listen) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{- define "mongo-tenant-proxy.probe" -}}
httpGet:
  path: {{ .probe.path }}
  port: {{ .port }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end }}

{{/*
The proxy container as a list item. Extra key in the context: "sidecar" (bool) adds
restartPolicy: Always (a native sidecar when placed under initContainers) and "mtp-" port names.
*/}}
{{- define "mongo-tenant-proxy.container" -}}
{{- $v := .values -}}
{{- $sidecar := default false .sidecar -}}
{{- $metricsPortName := include "mongo-tenant-proxy.metricsPortName" . -}}
- name: {{ ternary $v.sidecar.containerName "proxy" $sidecar }}
  image: {{ include "mongo-tenant-proxy.image" . | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if $sidecar }}
  restartPolicy: Always
  {{- end }}
  args: ["serve", "--config", "/etc/mongo-tenant-proxy/config/config.yaml"]
  env:
    {{- range $v.secretEnv }}
    - name: {{ required "secretEnv[].name is required" .name }}
      valueFrom:
        secretKeyRef:
          name: {{ required "secretEnv[].secretName is required" .secretName }}
          key: {{ required "secretEnv[].key is required" .key }}
    {{- end }}
    {{- /* Like the image's ENV, for any image: glibc keeps freed memory in per-thread arenas and,
    with its dynamic mmap threshold, in a fragmented heap, so RSS would stay high after big
    messages (docs/deploy.md, "Memory"). `env` may override either. */}}
    {{- $named := list }}
    {{- range (default (list) $v.env) }}{{ $named = append $named .name }}{{ end }}
    {{- if not (has "MALLOC_ARENA_MAX" $named) }}
    - name: MALLOC_ARENA_MAX
      value: "2"
    {{- end }}
    {{- if not (has "MALLOC_MMAP_THRESHOLD_" $named) }}
    - name: MALLOC_MMAP_THRESHOLD_
      value: "65536"
    {{- end }}
    {{- with $v.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    {{- range $i, $l := (default (list) $v.config.listeners) }}
    - name: {{ include "mongo-tenant-proxy.portName" (dict "index" $i "sidecar" $sidecar) }}
      containerPort: {{ include "mongo-tenant-proxy.port" (dict "address" $l.listen "field" (printf "config.listeners[%d].listen" $i)) }}
      protocol: TCP
    {{- end }}
    - name: {{ $metricsPortName }}
      containerPort: {{ include "mongo-tenant-proxy.metricsPort" . }}
      protocol: TCP
  startupProbe:
    {{- include "mongo-tenant-proxy.probe" (dict "probe" $v.probes.startup "port" $metricsPortName) | nindent 4 }}
  livenessProbe:
    {{- include "mongo-tenant-proxy.probe" (dict "probe" $v.probes.liveness "port" $metricsPortName) | nindent 4 }}
  readinessProbe:
    {{- include "mongo-tenant-proxy.probe" (dict "probe" $v.probes.readiness "port" $metricsPortName) | nindent 4 }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.containerSecurityContext | nindent 4 }}
  {{- if and (not $sidecar) $v.lifecycle }}
  lifecycle:
    {{- toYaml $v.lifecycle | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: mtp-config
      mountPath: /etc/mongo-tenant-proxy/config
      readOnly: true
    - name: mtp-tmp
      mountPath: /tmp
    {{- range $i, $s := $v.tls.secrets }}
    - name: {{ printf "mtp-tls-%d" $i }}
      mountPath: {{ default (printf "/etc/mongo-tenant-proxy/tls/%s" $s.secretName) $s.mountPath }}
      readOnly: true
    {{- end }}
    {{- if $v.credentials.secretName }}
    - name: mtp-credentials
      mountPath: /etc/mongo-tenant-proxy/credentials
      readOnly: true
    {{- end }}
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/* The proxy's volumes as list items. */}}
{{- define "mongo-tenant-proxy.volumes" -}}
{{- $v := .values -}}
- name: mtp-config
  configMap:
    name: {{ include "mongo-tenant-proxy.fullname" . }}
- name: mtp-tmp
  emptyDir:
    sizeLimit: 16Mi
{{- range $i, $s := $v.tls.secrets }}
- name: {{ printf "mtp-tls-%d" $i }}
  secret:
    secretName: {{ required "tls.secrets[].secretName is required" $s.secretName }}
    defaultMode: 292 # 0444 in octal, written in decimal so every YAML parser agrees
{{- end }}
{{- if $v.credentials.secretName }}
- name: mtp-credentials
  secret:
    secretName: {{ $v.credentials.secretName }}
    defaultMode: 292 # 0444 in octal, written in decimal so every YAML parser agrees
{{- end }}
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* ---- public: sidecar mode ---- */}}

{{- define "mongo-tenant-proxy.sidecar" -}}
{{- include "mongo-tenant-proxy.container" (merge (dict "sidecar" true) .) -}}
{{- end }}

{{- define "mongo-tenant-proxy.sidecarVolumes" -}}
{{- include "mongo-tenant-proxy.volumes" . -}}
{{- end }}
