{{- /*
  Rules for the namespaced objects the operator handles, granted cluster-wide (no watchNamespaces)
  or in each watched namespace. Least privilege, each rule for one thing the operator does:
*/}}
{{- define "modeldeploy.namespacedRules" -}}
# Watch ModelDeployments. The operator keeps no Kopf state on them and adds no finalizer, but Kopf
# patches the object itself to strip a legacy finalizer or annotation when it finds one.
- apiGroups: ["modeldeploy.io"]
  resources: ["modeldeployments"]
  verbs: ["get", "list", "watch", "patch"]
# Write status (engine, selection, conditions) through the status subresource.
- apiGroups: ["modeldeploy.io"]
  resources: ["modeldeployments/status"]
  verbs: ["get", "patch"]
# Children carry an ownerReference with blockOwnerDeletion; clusters with the
# OwnerReferencesPermissionEnforcement admission plugin require this to set it.
- apiGroups: ["modeldeploy.io"]
  resources: ["modeldeployments/finalizers"]
  verbs: ["update"]
# The rendered Deployment and Service: watched (Kopf event handlers), read, and written by server-side
# apply, which the apiserver authorizes as patch, and also as create when the object is new. Deletion is
# left to the garbage collector through the ownerReference.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The NetworkPolicies of each model and endpoint picker (docs/security.md, "NetworkPolicies"): applied,
# watched (our label only) so that one deleted or edited by someone else is applied again, and deleted
# when the operator config switches them off.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Autoscaling and routing (docs/autoscaling.md, docs/gateway.md), applied only when their CRDs exist:
# KEDA ScaledObjects or, without KEDA, HPAs; the HTTP add-on's HTTPScaledObjects for scale-to-zero;
# an InferencePool and an HTTPRoute per model behind a Gateway. Deleted by the operator when the spec
# stops asking for them (the garbage collector removes them with the ModelDeployment). Watched (list,
# watch, our label only) so that one deleted or edited by someone else is applied again.
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["http.keda.sh"]
  resources: ["httpscaledobjects"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["inference.networking.k8s.io"]
  resources: ["inferencepools"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Read-only pod status: the auto-NGL init container's decision (its termination message, for
# status.nGpuLayers) and the scheduler's reason when a pod cannot be placed (in the Ready condition).
# Kopf watches all pods in scope and acts only on ours (managed-by label; filtered in the operator).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# The shared model cache (docs/model-cache.md): one claim and one download Job per model, created when
# absent and never updated; a claim is patched only to list another ModelDeployment as its owner
# (Delete retention). The Job's ServiceAccount, and a Role + RoleBinding letting it patch its one claim
# (the progress annotation): granting "patch persistentvolumeclaims" needs the operator to hold it.
# The operator deletes only a failed download Job, to run it again after the ModelDeployment it was made for
# was edited; the garbage collector deletes the rest, following the ownerReferences.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "list", "watch", "create"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create"]
{{- with .Values.config.gateway }}
{{- if and .name .endpointPicker.deploy }}
# The endpoint picker `<name>-epp` of each InferencePool (docs/gateway.md), only with a gateway configured
# and gateway.endpointPicker.deploy on: its Deployment, Service, ServiceAccount, Role and RoleBinding are
# applied (server-side apply: create + patch) and deleted when the spec stops asking for a route. The
# operator deletes only these `<name>-epp` objects it controls (same name, its ownerReference), never the
# model's workload. The picker's Role grants read on pods, InferencePools, InferenceObjectives and
# InferenceModelRewrites (as the Inference Extension's chart does); the apiserver lets the operator create
# a Role only with rights it holds itself (RBAC escalation prevention), hence the reads below, which the
# operator itself never uses.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["delete"]
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get"]
- apiGroups: ["inference.networking.k8s.io"]
  resources: ["inferencepools"]
  verbs: ["list", "watch"]
- apiGroups: ["inference.networking.x-k8s.io"]
  resources: ["inferenceobjectives", "inferencemodelrewrites"]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- end }}
# Events about decisions and failures: the operator POSTs core/v1 Events (it never patches them).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
{{- /* Cluster-scoped reads, needed whatever the watched namespaces. */}}
{{- define "modeldeploy.clusterRules" -}}
# Node facts (GPU labels, capacity, taints) drive the engine choice: a Kopf index over all Nodes.
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["list", "watch"]
# Kopf lists and watches CRDs to find the resources it serves.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
# A model cache claim that stays Pending: does its StorageClass exist, is there a default one.
- apiGroups: ["storage.k8s.io"]
  resources: ["storageclasses"]
  verbs: ["get", "list"]
{{- end }}
