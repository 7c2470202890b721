{{/* Names: the chart's own objects are called <fullname>-operator, -view, -edit. */}}
{{- define "deltaforge.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "deltaforge.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "deltaforge.operator" -}}
{{- printf "%s-operator" (include "deltaforge.fullname" .) }}
{{- end }}

{{- define "deltaforge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "deltaforge.operator" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Labels of every object. part-of=deltaforge is also what the local pod runner (hack/podrunner)
selects pods by, so the operator pod runs there in tests and the demo.
*/}}
{{- define "deltaforge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "deltaforge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: deltaforge
{{- end }}

{{- define "deltaforge.operatorSelector" -}}
app.kubernetes.io/name: {{ include "deltaforge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "deltaforge.operatorLabels" -}}
{{ include "deltaforge.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "deltaforge.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "deltaforge.workerImage" -}}
{{- $repository := default .Values.image.repository .Values.worker.image.repository }}
{{- printf "%s:%s" $repository (default (default .Chart.AppVersion .Values.image.tag) .Values.worker.image.tag) }}
{{- end }}

{{/*
The operator's permissions, as a ClusterRole (every namespace) or a Role per watched namespace:
what operator/deltaforge_operator does (kube.py's requests, kopf's watches), nothing more; see
docs/operator.md. Deletions are of its own objects only: the children a stopped Pipeline gives up,
and the slot-cleanup Job. Everything else goes with its Pipeline through ownerReferences.
*/}}
{{- define "deltaforge.operatorRules" -}}
# Pipelines: read to reconcile, watched (kopf) to react at once; patch removes the
# deltaforge.io/restart annotation and adds or removes the slot-cleanup finalizer.
- apiGroups: ["deltaforge.io"]
  resources: ["pipelines"]
  verbs: ["get", "list", "watch", "patch"]
# The status subresource: the operator writes phase and conditions. get: because each worker's
# Role grants get on its own Pipeline's status, and RBAC lets no one grant what it does not hold.
- apiGroups: ["deltaforge.io"]
  resources: ["pipelines/status"]
  verbs: ["get", "patch"]
# Children carry ownerReferences with blockOwnerDeletion, which clusters running the
# OwnerReferencesPermissionEnforcement admission plugin (OpenShift) allow only with this.
- apiGroups: ["deltaforge.io"]
  resources: ["pipelines/finalizers"]
  verbs: ["update"]
# The worker's config and checkpoint ConfigMaps: written by server-side apply (a PATCH, which needs
# create too when the object is missing), watched by label to restore edits, deleted when a
# Pipeline is stopped (the checkpoint stays). update: only held to grant it to the worker for its
# checkpoint ConfigMap.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Secrets: the operator reads the keys a Pipeline references (their digest rolls the worker when a
# password rotates), watches Secrets for that rotation, and writes (and on stop deletes) each
# Pipeline's credentials Secret. It never puts a value in a log, an Event or a status.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Each worker's ServiceAccount and metrics Service: applied, watched, deleted on stop.
- apiGroups: [""]
  resources: ["serviceaccounts", "services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The worker's Role and RoleBinding (its checkpoint ConfigMap and its Pipeline's status, by name).
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The worker Deployment: applied, scaled to zero (pause, and before a slot cleanup), watched for
# rollouts and drift, deleted on stop.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The Job that drops a deleted Pipeline's replication slot (slot.reclaimPolicy: Delete): started,
# watched until it ends, then deleted.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Pods, read only: the worker's readiness, restarts and last error, and why a cleanup Job failed.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Events on Pipelines (Created, Ready, NotReady, InvalidSpec, ...), as `kubectl describe` lists them.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
