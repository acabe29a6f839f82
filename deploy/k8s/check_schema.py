#!/usr/bin/env python3
"""A small, offline schema check of the Kubernetes manifests of deploy/k8s.

Each YAML document's apiVersion/kind must be one of the table below; its fields must be known
(a misspelt field is an error, as with kubectl's strict field validation), required ones present,
and every value of the type Kubernetes decodes it to (an env value `600` is a number, not the
string the API wants). A few rules the API server or controllers enforce across fields are
checked too: a Deployment's selector matches its pod labels, volume mounts name volumes, probes
name container ports, a PodDisruptionBudget sets exactly one of minAvailable/maxUnavailable, an
autoscaler's metric carries the member its type names, and scale targets and KEDA
authentication references name objects of the same set of files.

    check_schema.py FILE...           prints FILE:DOC:PATH: problem per violation, exits 1 if any
    check_schema.py --json FILE...    prints the documents as JSON [{file, doc, object}] (for jq)

It covers the fields these manifests use and their neighbours, not the whole API. Standard
library, and PyYAML to read YAML (python3-yaml, which yamllint depends on).
"""
import json
import re
import sys

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.stderr.write("check_schema.py: PyYAML is missing (Debian package python3-yaml)\n")
    sys.exit(2)


# --- Schema vocabulary -------------------------------------------------------------------------

def obj(fields, required=(), open_=False):
    """An object with known fields; required names must be present; open_ allows unknown ones."""
    return {"t": "object", "fields": fields, "required": set(required), "open": open_}


def arr(item, nonempty=False):
    return {"t": "array", "item": item, "nonempty": nonempty}


def mapof(value):
    return {"t": "map", "value": value}


def string(pattern=None, enum=None, maxlen=None):
    return {"t": "string", "pattern": pattern, "enum": enum, "maxlen": maxlen}


def integer(lo=None, hi=None):
    return {"t": "integer", "lo": lo, "hi": hi}


STR = string()
BOOL = {"t": "boolean"}
INT = integer()
NONNEG = integer(0)
PORT = integer(1, 65535)
INT_OR_STR = {"t": "int-or-string"}
QUANTITY = {"t": "quantity"}
ANY = {"t": "any"}

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
QUANTITY_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?\d+)?$")
LABEL_KEY = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"

LABELS = mapof(string(maxlen=63))
OBJECT_META = obj({
    "name": string(DNS_SUBDOMAIN, maxlen=253), "namespace": string(DNS_LABEL, maxlen=63),
    "generateName": STR, "labels": LABELS, "annotations": mapof(STR),
}, required=["name"])
TEMPLATE_META = obj({"name": STR, "labels": LABELS, "annotations": mapof(STR)})

LABEL_SELECTOR = obj({
    "matchLabels": LABELS,
    "matchExpressions": arr(obj({
        "key": STR, "operator": string(enum=["In", "NotIn", "Exists", "DoesNotExist"]), "values": arr(STR),
    }, required=["key", "operator"])),
})

KEY_REF = obj({"name": STR, "key": STR, "optional": BOOL}, required=["key"])
ENV_VAR = obj({
    "name": string(ENV_NAME), "value": STR,
    "valueFrom": obj({
        "secretKeyRef": KEY_REF, "configMapKeyRef": KEY_REF,
        "fieldRef": obj({"fieldPath": STR, "apiVersion": STR}, required=["fieldPath"]),
        "resourceFieldRef": obj({"resource": STR, "containerName": STR, "divisor": QUANTITY},
                                required=["resource"]),
    }),
}, required=["name"])
ENV_FROM = obj({
    "prefix": STR,
    "configMapRef": obj({"name": STR, "optional": BOOL}, required=["name"]),
    "secretRef": obj({"name": STR, "optional": BOOL}, required=["name"]),
})
PROBE = obj({
    "httpGet": obj({"path": STR, "port": INT_OR_STR, "host": STR, "scheme": string(enum=["HTTP", "HTTPS"]),
                    "httpHeaders": arr(obj({"name": STR, "value": STR}, required=["name", "value"]))},
                   required=["port"]),
    "tcpSocket": obj({"port": INT_OR_STR, "host": STR}, required=["port"]),
    "exec": obj({"command": arr(STR)}),
    "grpc": obj({"port": PORT, "service": STR}, required=["port"]),
    "initialDelaySeconds": NONNEG, "periodSeconds": integer(1), "timeoutSeconds": integer(1),
    "successThreshold": integer(1), "failureThreshold": integer(1), "terminationGracePeriodSeconds": integer(1),
})
CAPABILITIES = obj({"add": arr(STR), "drop": arr(STR)})
SECCOMP = obj({"type": string(enum=["RuntimeDefault", "Localhost", "Unconfined"]), "localhostProfile": STR},
              required=["type"])
CONTAINER_SECURITY = obj({
    "runAsNonRoot": BOOL, "runAsUser": NONNEG, "runAsGroup": NONNEG, "privileged": BOOL,
    "allowPrivilegeEscalation": BOOL, "readOnlyRootFilesystem": BOOL, "capabilities": CAPABILITIES,
    "seccompProfile": SECCOMP, "procMount": STR,
})
POD_SECURITY = obj({
    "runAsNonRoot": BOOL, "runAsUser": NONNEG, "runAsGroup": NONNEG, "fsGroup": NONNEG,
    "fsGroupChangePolicy": string(enum=["OnRootMismatch", "Always"]), "supplementalGroups": arr(NONNEG),
    "seccompProfile": SECCOMP,
})
CONTAINER = obj({
    "name": string(DNS_LABEL, maxlen=63), "image": STR,
    "imagePullPolicy": string(enum=["Always", "IfNotPresent", "Never"]),
    "command": arr(STR), "args": arr(STR), "workingDir": STR,
    "env": arr(ENV_VAR), "envFrom": arr(ENV_FROM),
    "ports": arr(obj({"name": string(DNS_LABEL, maxlen=15), "containerPort": PORT, "hostPort": PORT,
                      "hostIP": STR, "protocol": string(enum=["TCP", "UDP", "SCTP"])},
                     required=["containerPort"])),
    "readinessProbe": PROBE, "livenessProbe": PROBE, "startupProbe": PROBE,
    "resources": obj({"requests": mapof(QUANTITY), "limits": mapof(QUANTITY)}),
    "volumeMounts": arr(obj({"name": STR, "mountPath": STR, "readOnly": BOOL, "subPath": STR,
                             "mountPropagation": STR}, required=["name", "mountPath"])),
    "securityContext": CONTAINER_SECURITY,
    "lifecycle": obj({"preStop": ANY, "postStart": ANY}),
    "terminationMessagePolicy": string(enum=["File", "FallbackToLogsOnError"]),
    "stdin": BOOL, "tty": BOOL,
}, required=["name", "image"])
KEY_TO_PATH = obj({"key": STR, "path": STR, "mode": integer(0, 0o777)}, required=["key", "path"])
VOLUME = obj({
    "name": string(DNS_LABEL, maxlen=63),
    "secret": obj({"secretName": STR, "items": arr(KEY_TO_PATH), "defaultMode": integer(0, 0o777),
                   "optional": BOOL}),
    "configMap": obj({"name": STR, "items": arr(KEY_TO_PATH), "defaultMode": integer(0, 0o777),
                      "optional": BOOL}),
    "emptyDir": obj({"medium": string(enum=["", "Memory"]), "sizeLimit": QUANTITY}),
    "persistentVolumeClaim": obj({"claimName": STR, "readOnly": BOOL}, required=["claimName"]),
    "projected": ANY,
}, required=["name"])
POD_SPEC = obj({
    "containers": arr(CONTAINER, nonempty=True), "initContainers": arr(CONTAINER),
    "volumes": arr(VOLUME),
    "restartPolicy": string(enum=["Always", "OnFailure", "Never"]),
    "terminationGracePeriodSeconds": NONNEG, "activeDeadlineSeconds": integer(1),
    "securityContext": POD_SECURITY, "serviceAccountName": STR, "automountServiceAccountToken": BOOL,
    "nodeSelector": mapof(STR), "affinity": ANY, "tolerations": arr(ANY),
    "topologySpreadConstraints": arr(obj({
        "maxSkew": integer(1), "topologyKey": STR,
        "whenUnsatisfiable": string(enum=["DoNotSchedule", "ScheduleAnyway"]), "labelSelector": LABEL_SELECTOR,
        "minDomains": integer(1),
    }, required=["maxSkew", "topologyKey", "whenUnsatisfiable"])),
    "priorityClassName": STR, "imagePullSecrets": arr(obj({"name": STR}, required=["name"])),
    "enableServiceLinks": BOOL,
}, required=["containers"])
POD_TEMPLATE = obj({"metadata": TEMPLATE_META, "spec": POD_SPEC}, required=["spec"])

METRIC_TARGET = obj({
    "type": string(enum=["Utilization", "Value", "AverageValue"]), "value": QUANTITY, "averageValue": QUANTITY,
    "averageUtilization": integer(1),
}, required=["type"])
METRIC_ID = obj({"name": STR, "selector": LABEL_SELECTOR}, required=["name"])
CROSS_REF = obj({"apiVersion": STR, "kind": STR, "name": STR}, required=["kind", "name"])
METRIC_SPEC = obj({
    "type": string(enum=["Resource", "Pods", "Object", "External", "ContainerResource"]),
    "resource": obj({"name": STR, "target": METRIC_TARGET}, required=["name", "target"]),
    "containerResource": obj({"name": STR, "container": STR, "target": METRIC_TARGET},
                             required=["name", "container", "target"]),
    "pods": obj({"metric": METRIC_ID, "target": METRIC_TARGET}, required=["metric", "target"]),
    "object": obj({"describedObject": CROSS_REF, "metric": METRIC_ID, "target": METRIC_TARGET},
                  required=["describedObject", "metric", "target"]),
    "external": obj({"metric": METRIC_ID, "target": METRIC_TARGET}, required=["metric", "target"]),
}, required=["type"])
SCALING_RULES = obj({
    "stabilizationWindowSeconds": integer(0, 3600), "selectPolicy": string(enum=["Max", "Min", "Disabled"]),
    "policies": arr(obj({"type": string(enum=["Pods", "Percent"]), "value": integer(1),
                         "periodSeconds": integer(1, 1800)}, required=["type", "value", "periodSeconds"])),
})
HPA_BEHAVIOR = obj({"scaleUp": SCALING_RULES, "scaleDown": SCALING_RULES})


def top(kind_fields, required=()):
    """A whole object: apiVersion, kind and metadata, then the kind's own fields."""
    fields = {"apiVersion": STR, "kind": STR, "metadata": OBJECT_META}
    fields.update(kind_fields)
    return obj(fields, required=["apiVersion", "kind", "metadata", *required])


SCHEMAS = {
    ("v1", "ConfigMap"): top({"data": mapof(STR), "binaryData": mapof(STR), "immutable": BOOL}),
    ("v1", "Secret"): top({"type": STR, "data": mapof(STR), "stringData": mapof(STR), "immutable": BOOL}),
    ("v1", "Service"): top({"spec": obj({
        "type": string(enum=["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]),
        "selector": LABELS, "clusterIP": STR, "sessionAffinity": string(enum=["None", "ClientIP"]),
        "ports": arr(obj({"name": string(DNS_LABEL, maxlen=63), "port": PORT, "targetPort": INT_OR_STR,
                          "nodePort": PORT, "protocol": string(enum=["TCP", "UDP", "SCTP"]),
                          "appProtocol": STR}, required=["port"])),
        "externalName": STR, "publishNotReadyAddresses": BOOL,
    })}, required=["spec"]),
    ("v1", "PersistentVolumeClaim"): top({"spec": obj({
        "accessModes": arr(string(enum=["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]),
                           nonempty=True),
        "resources": obj({"requests": mapof(QUANTITY), "limits": mapof(QUANTITY)}, required=["requests"]),
        "storageClassName": STR, "volumeMode": string(enum=["Filesystem", "Block"]), "volumeName": STR,
        "selector": LABEL_SELECTOR,
    }, required=["accessModes", "resources"])}, required=["spec"]),
    ("apps/v1", "Deployment"): top({"spec": obj({
        "replicas": NONNEG, "selector": LABEL_SELECTOR, "template": POD_TEMPLATE,
        "strategy": obj({"type": string(enum=["RollingUpdate", "Recreate"]),
                         "rollingUpdate": obj({"maxUnavailable": INT_OR_STR, "maxSurge": INT_OR_STR})}),
        "minReadySeconds": NONNEG, "revisionHistoryLimit": NONNEG, "progressDeadlineSeconds": integer(1),
        "paused": BOOL,
    }, required=["selector", "template"])}, required=["spec"]),
    ("batch/v1", "Job"): top({"spec": obj({
        "template": POD_TEMPLATE, "backoffLimit": NONNEG, "completions": NONNEG, "parallelism": NONNEG,
        "activeDeadlineSeconds": integer(1), "ttlSecondsAfterFinished": NONNEG,
        "completionMode": string(enum=["NonIndexed", "Indexed"]), "suspend": BOOL,
        "podFailurePolicy": obj({"rules": arr(obj({
            "action": string(enum=["FailJob", "Ignore", "Count", "FailIndex"]),
            "onExitCodes": obj({"containerName": STR, "operator": string(enum=["In", "NotIn"]),
                                "values": arr(INT, nonempty=True)}, required=["operator", "values"]),
            "onPodConditions": arr(obj({"type": STR, "status": STR}, required=["type"])),
        }, required=["action"]), nonempty=True)}, required=["rules"]),
    }, required=["template"])}, required=["spec"]),
    ("policy/v1", "PodDisruptionBudget"): top({"spec": obj({
        "minAvailable": INT_OR_STR, "maxUnavailable": INT_OR_STR, "selector": LABEL_SELECTOR,
        "unhealthyPodEvictionPolicy": string(enum=["IfHealthyBudget", "AlwaysAllow"]),
    }, required=["selector"])}, required=["spec"]),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): top({"spec": obj({
        "scaleTargetRef": CROSS_REF, "minReplicas": integer(1), "maxReplicas": integer(1),
        "metrics": arr(METRIC_SPEC), "behavior": HPA_BEHAVIOR,
    }, required=["scaleTargetRef", "maxReplicas"])}, required=["spec"]),
    ("keda.sh/v1alpha1", "ScaledObject"): top({"spec": obj({
        "scaleTargetRef": obj({"name": STR, "kind": STR, "apiVersion": STR, "envSourceContainerName": STR},
                              required=["name"]),
        "pollingInterval": integer(1), "cooldownPeriod": NONNEG, "initialCooldownPeriod": NONNEG,
        "idleReplicaCount": NONNEG, "minReplicaCount": NONNEG, "maxReplicaCount": integer(1),
        "fallback": obj({"failureThreshold": integer(1), "replicas": NONNEG},
                        required=["failureThreshold", "replicas"]),
        "advanced": obj({"restoreToOriginalReplicaCount": BOOL,
                         "horizontalPodAutoscalerConfig": obj({"name": STR, "behavior": HPA_BEHAVIOR})}),
        # KEDA reads trigger metadata as a map of strings: a bare number there is refused.
        "triggers": arr(obj({
            "type": STR, "name": STR, "metadata": mapof(STR), "useCachedMetrics": BOOL,
            "metricType": string(enum=["AverageValue", "Value", "Utilization"]),
            "authenticationRef": obj({"name": STR, "kind": string(enum=["TriggerAuthentication",
                                                                       "ClusterTriggerAuthentication"])},
                                     required=["name"]),
        }, required=["type", "metadata"]), nonempty=True),
    }, required=["scaleTargetRef", "triggers"])}, required=["spec"]),
    ("keda.sh/v1alpha1", "TriggerAuthentication"): top({"spec": obj({
        "secretTargetRef": arr(obj({"parameter": STR, "name": STR, "key": STR},
                                   required=["parameter", "name", "key"])),
        "env": arr(obj({"parameter": STR, "name": STR, "containerName": STR}, required=["parameter", "name"])),
        "podIdentity": obj({"provider": STR, "identityId": STR}, required=["provider"]),
        "hashiCorpVault": ANY, "azureKeyVault": ANY, "awsSecretManager": ANY,
    })}, required=["spec"]),
}

# What a KEDA rabbitmq trigger needs (keda.sh/docs/2.x/scalers/rabbitmq-queue).
RABBITMQ_TRIGGER = {"queueName": None, "mode": ["QueueLength", "MessageRate"], "value": None,
                    "protocol": ["auto", "http", "amqp"]}


# --- Checking ----------------------------------------------------------------------------------

def type_name(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object" if isinstance(v, dict) else type(v).__name__


def check(v, s, path, out):
    """check appends (path, message) to out for every way v breaks schema s."""
    t = s["t"]
    if t == "any":
        return
    if t == "object" or t == "map":
        if not isinstance(v, dict):
            out.append((path, f"expected an object, got {type_name(v)}"))
            return
        for k, sub in v.items():
            p = f"{path}.{k}" if path else str(k)
            if not isinstance(k, str):
                out.append((p, f"key {k!r} is not a string"))
            elif t == "map":
                check(sub, s["value"], p, out)
            elif k in s["fields"]:
                check(sub, s["fields"][k], p, out)
            elif not s["open"]:
                out.append((p, "unknown field"))
        for k in sorted(s.get("required", ())):
            if k not in v:
                out.append((f"{path}.{k}" if path else k, "required field missing"))
        return
    if t == "array":
        if not isinstance(v, list):
            out.append((path, f"expected an array, got {type_name(v)}"))
            return
        if s["nonempty"] and not v:
            out.append((path, "must not be empty"))
        for i, item in enumerate(v):
            check(item, s["item"], f"{path}[{i}]", out)
        return
    if t == "string":
        if not isinstance(v, str):
            out.append((path, f"expected a string, got {type_name(v)} {json.dumps(v)} (quote it)"))
        elif s["enum"] is not None and v not in s["enum"]:
            out.append((path, f"{v!r} is not one of {', '.join(s['enum'])}"))
        elif s["pattern"] and not re.match(s["pattern"], v):
            out.append((path, f"{v!r} does not match {s['pattern']}"))
        elif s["maxlen"] and len(v) > s["maxlen"]:
            out.append((path, f"longer than {s['maxlen']} characters"))
        return
    if t == "integer":
        if not isinstance(v, int) or isinstance(v, bool):
            out.append((path, f"expected an integer, got {type_name(v)} {json.dumps(v)}"))
        elif (s["lo"] is not None and v < s["lo"]) or (s["hi"] is not None and v > s["hi"]):
            out.append((path, f"{v} is out of range {s['lo']}..{s['hi'] if s['hi'] is not None else ''}"))
        return
    if t == "boolean":
        if not isinstance(v, bool):
            out.append((path, f"expected a boolean, got {type_name(v)} {json.dumps(v)}"))
        return
    if t == "int-or-string":
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            out.append((path, f"expected an integer or a string, got {type_name(v)}"))
        return
    if t == "quantity":
        if isinstance(v, bool) or not isinstance(v, (int, float, str)) or \
                (isinstance(v, str) and not QUANTITY_RE.match(v)):
            out.append((path, f"{json.dumps(v)} is not a quantity (e.g. 100m, 64Mi, 5)"))
        return
    raise ValueError(f"unknown schema type {t}")


def selects(selector, labels):
    """selects says whether a LabelSelector's matchLabels all appear in labels."""
    ml = (selector or {}).get("matchLabels") or {}
    return bool(ml) and all(labels.get(k) == v for k, v in ml.items())


def pod_rules(spec, path, out):
    """Cross-field rules of a pod spec: mounts name volumes, named probe ports exist, env once."""
    if not isinstance(spec, dict):
        return
    volumes = {v.get("name") for v in spec.get("volumes") or [] if isinstance(v, dict)}
    for i, c in enumerate(spec.get("containers") or []):
        if not isinstance(c, dict):
            continue
        cp = f"{path}.containers[{i}]"
        for j, m in enumerate(c.get("volumeMounts") or []):
            if isinstance(m, dict) and m.get("name") not in volumes:
                out.append((f"{cp}.volumeMounts[{j}].name", f"no volume named {m.get('name')!r}"))
        ports = {p.get("name") for p in c.get("ports") or [] if isinstance(p, dict)}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            for how in ("httpGet", "tcpSocket"):
                port = ((c.get(probe) or {}).get(how) or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    out.append((f"{cp}.{probe}.{how}.port", f"no container port named {port!r}"))
        seen = set()
        for j, e in enumerate(c.get("env") or []):
            if not isinstance(e, dict):
                continue
            if e.get("name") in seen:
                out.append((f"{cp}.env[{j}].name", f"{e.get('name')} is set twice"))
            seen.add(e.get("name"))
            if "value" in e and "valueFrom" in e:
                out.append((f"{cp}.env[{j}]", "value and valueFrom are exclusive"))
    for j, v in enumerate(spec.get("volumes") or []):
        if isinstance(v, dict) and len([k for k in v if k != "name"]) != 1:
            out.append((f"{path}.volumes[{j}]", "a volume needs exactly one source"))


def rules(o, out):
    """Cross-field rules of one object (after its schema passed)."""
    kind, spec = o.get("kind"), o.get("spec") or {}
    if kind == "Deployment":
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not selects(spec.get("selector"), labels):
            out.append(("spec.selector", "matchLabels do not select spec.template.metadata.labels"))
        pod_rules((spec.get("template") or {}).get("spec"), "spec.template.spec", out)
    elif kind == "Job":
        ps = (spec.get("template") or {}).get("spec") or {}
        if ps.get("restartPolicy") not in ("Never", "OnFailure"):
            out.append(("spec.template.spec.restartPolicy", "a Job's pods need Never or OnFailure"))
        if spec.get("podFailurePolicy") and ps.get("restartPolicy") != "Never":
            out.append(("spec.podFailurePolicy", "needs restartPolicy Never"))
        pod_rules(ps, "spec.template.spec", out)
    elif kind == "PodDisruptionBudget":
        if ("minAvailable" in spec) == ("maxUnavailable" in spec):
            out.append(("spec", "set exactly one of minAvailable and maxUnavailable"))
    elif kind == "HorizontalPodAutoscaler":
        if spec.get("minReplicas", 1) > spec.get("maxReplicas", 1):
            out.append(("spec.minReplicas", "greater than maxReplicas"))
        member = {"Resource": "resource", "Pods": "pods", "Object": "object", "External": "external",
                  "ContainerResource": "containerResource"}
        for i, m in enumerate(spec.get("metrics") or []):
            want = member.get(m.get("type"))
            if want and want not in m:
                out.append((f"spec.metrics[{i}]", f"type {m.get('type')} needs {want}"))
            extra = [k for k in m if k not in ("type", want)]
            if extra:
                out.append((f"spec.metrics[{i}]", f"type {m.get('type')} takes no {', '.join(extra)}"))
    elif kind == "ScaledObject":
        if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
            out.append(("spec.minReplicaCount", "greater than maxReplicaCount"))
        for i, t in enumerate(spec.get("triggers") or []):
            if t.get("type") != "rabbitmq":
                continue
            md = t.get("metadata") or {}
            for k, allowed in RABBITMQ_TRIGGER.items():
                if k not in md:
                    out.append((f"spec.triggers[{i}].metadata.{k}", "required by the rabbitmq scaler"))
                elif allowed and md[k] not in allowed:
                    out.append((f"spec.triggers[{i}].metadata.{k}", f"{md[k]!r} is not one of {', '.join(allowed)}"))
            if "authenticationRef" not in t and "hostFromEnv" not in md and "host" not in md:
                out.append((f"spec.triggers[{i}]", "the rabbitmq scaler needs a host (authenticationRef)"))


def set_rules(docs, out):
    """Rules across the documents: references name objects of the set."""
    names = {}
    for d in docs:
        o = d["object"]
        names.setdefault(o.get("kind"), {})[(o.get("metadata") or {}).get("name")] = o
    deployments = names.get("Deployment", {})
    for d in docs:
        o, where = d["object"], (d["file"], d["doc"])
        spec = o.get("spec") or {}
        kind = o.get("kind")
        if kind in ("HorizontalPodAutoscaler", "ScaledObject"):
            ref = spec.get("scaleTargetRef") or {}
            if ref.get("kind", "Deployment") == "Deployment" and ref.get("name") not in deployments:
                out.append((*where, "spec.scaleTargetRef.name", f"no Deployment named {ref.get('name')!r}"))
        if kind == "ScaledObject":
            for i, t in enumerate(spec.get("triggers") or []):
                ref = t.get("authenticationRef")
                if ref and ref.get("kind", "TriggerAuthentication") == "TriggerAuthentication" and \
                        ref.get("name") not in names.get("TriggerAuthentication", {}):
                    out.append((*where, f"spec.triggers[{i}].authenticationRef.name",
                                f"no TriggerAuthentication named {ref.get('name')!r}"))
        if kind == "PodDisruptionBudget":
            if not any(selects(spec.get("selector"), ((dep.get("spec") or {}).get("template") or {})
                               .get("metadata", {}).get("labels") or {}) for dep in deployments.values()):
                out.append((*where, "spec.selector", "selects the pods of no Deployment of these files"))


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load(files, problems):
    """load reads every document of every file: [{file, doc, object}] (doc counts from 1)."""
    docs = []
    for f in files:
        n = 0
        try:
            with open(f, encoding="utf-8") as fp:
                for o in yaml.load_all(fp, Loader=StrictLoader):
                    n += 1
                    if o is not None:
                        docs.append({"file": f, "doc": n, "object": o})
        except OSError as e:
            problems.append((f, 0, "", str(e)))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            problems.append((f, n + 1, "", f"{getattr(e, 'problem', None) or e}{where}"))
    return docs


def main(argv):
    as_json = argv[:1] == ["--json"]
    files = argv[1:] if as_json else argv
    if not files:
        sys.stderr.write("usage: check_schema.py [--json] FILE...\n")
        return 2
    problems = []
    docs = load(files, problems)
    if as_json:
        json.dump(docs, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 1 if problems else 0
    for d in docs:
        o, found = d["object"], []
        if not isinstance(o, dict):
            found.append(("", f"expected an object, got {type_name(o)}"))
        else:
            schema = SCHEMAS.get((o.get("apiVersion"), o.get("kind")))
            if schema is None:
                known = ", ".join(f"{a} {k}" for a, k in SCHEMAS)
                found.append(("", f"unknown apiVersion/kind {o.get('apiVersion')} {o.get('kind')} (known: {known})"))
            else:
                check(o, schema, "", found)
                if not found:
                    rules(o, found)
        problems += [(d["file"], d["doc"], p, m) for p, m in found]
    good = [d for d in docs if isinstance(d["object"], dict)]
    if not problems:
        set_rules(good, problems)
    for f, n, p, m in problems:
        print(f"{f}:{n}:{p}: {m}")
    if problems:
        return 1
    print(f"check_schema.py: {len(docs)} documents in {len(files)} files ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
