#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The Kubernetes manifests in conf/k8s, checked offline (issue 16).

No cluster here, and kubectl validates against a server's schema, so the
checks are the ones a cluster would fail on, done by hand:
- every document has apiVersion/kind/metadata.name, and the kinds and API
  versions are the ones Kubernetes 1.21+ and KServe 0.9+ serve;
- a Deployment's selector matches its pod labels; every volume mount has
  its volume, every volume's ConfigMap/Secret/PVC is in the manifests,
  and a secret key or subPath exists; probes name ports the container
  declares; the grace period outlasts the daemon's shutdown_grace_s;
- the Service and the PodDisruptionBudget select pods of a Deployment
  and the Service's targetPort is a port those pods declare;
- each Deployment's container arguments with the ConfigMap's
  slimserve.json are accepted by the real daemon (--check-config, with
  the paths moved into a temporary folder);
- the replicas mount the repository read-only and say role replica; the
  primary is one pod replaced with Recreate;
- the InferenceService names the ClusterServingRuntime and a format it
  supports;
- yamllint passes (relaxed rules) when installed.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

TOP_SRC = os.environ.get("top_srcdir", ".")
sys.path.insert(0, os.path.join(TOP_SRC, "tests", "lib"))
import tap  # noqa: E402
from daemon import BINARY  # noqa: E402

try:
    import yaml
except ImportError:
    tap.skip_all("python3-yaml is not installed")

K8S = os.path.join(TOP_SRC, "conf", "k8s")
KNOWN = {
    ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"),
    ("v1", "PersistentVolumeClaim"), ("apps/v1", "Deployment"),
    ("policy/v1", "PodDisruptionBudget"),
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"),
    ("serving.kserve.io/v1beta1", "InferenceService"),
}


def load_all():
    docs = []
    for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
        with open(path) as f:
            for d in yaml.safe_load_all(f):
                if d is not None:
                    docs.append((os.path.basename(path), d))
    return docs


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for _, d in docs if d["kind"] == kind}


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def check_deployment(name, dep, objs):
    spec = dep["spec"]
    pod = spec["template"]
    labels = pod["metadata"]["labels"]
    tap.ok(matches(spec["selector"]["matchLabels"], labels),
           "%s: selector matches its pod labels" % name)
    pspec = pod["spec"]
    vols = {v["name"]: v for v in pspec["volumes"]}
    problems = []
    for v in vols.values():
        if "configMap" in v and v["configMap"]["name"] not in objs["cm"]:
            problems.append("configMap %s" % v["configMap"]["name"])
        if "secret" in v and v["secret"]["secretName"] not in objs["sec"]:
            problems.append("secret %s" % v["secret"]["secretName"])
        if ("persistentVolumeClaim" in v and
                v["persistentVolumeClaim"]["claimName"] not in objs["pvc"]):
            problems.append("pvc %s" %
                            v["persistentVolumeClaim"]["claimName"])
    c = pspec["containers"][0]
    ports = {p.get("name"): p["containerPort"] for p in c["ports"]}
    for m in c["volumeMounts"]:
        v = vols.get(m["name"])
        if v is None:
            problems.append("mount %s has no volume" % m["name"])
        elif "subPath" in m and "secret" in v:
            keys = set((objs["sec"][v["secret"]["secretName"]].get(
                "stringData") or {}).keys())
            if m["subPath"] not in keys:
                problems.append("subPath %s not in the secret"
                                % m["subPath"])
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        p = c.get(probe, {}).get("httpGet", {}).get("port")
        if p is not None and p not in ports and p not in ports.values():
            problems.append("%s port %s" % (probe, p))
    tap.ok(not problems, "%s: volumes, secrets, claims and probe ports "
           "resolve" % name, problems)
    tap.ok(c.get("readinessProbe", {}).get("httpGet", {}).get("path") ==
           "/v2/health/ready", "%s: readiness is /v2/health/ready" % name)
    return c, pspec, ports


def check_config(name, c, pspec, config_json, tmp):
    """Runs the daemon's --check-config on the Deployment's arguments."""
    cfg = json.loads(config_json)
    grace = cfg.get("shutdown_grace_s", 30)
    tap.ok(pspec.get("terminationGracePeriodSeconds", 30) > grace,
           "%s: termination grace %ss > shutdown_grace_s %ss"
           % (name, pspec.get("terminationGracePeriodSeconds"), grace))
    d = os.path.join(tmp, name)
    os.makedirs(os.path.join(d, "models"))
    token = os.path.join(d, "token")
    with open(token, "w") as f:
        f.write("a-token-long-enough-for-the-test\n")
    os.chmod(token, 0o440)
    # Paths inside the pod move into the temporary folder.
    cfg["model_repository"] = os.path.join(d, "models")
    if "admin_token_file" in cfg:
        cfg["admin_token_file"] = token
    cpath = os.path.join(d, "slimserve.json")
    with open(cpath, "w") as f:
        json.dump(cfg, f)
    args = []
    for a in c["args"]:
        if a.startswith("--config="):
            a = "--config=" + cpath
        args.append(a)
    r = subprocess.run([BINARY] + args + ["--check-config"],
                       capture_output=True, text=True, timeout=30)
    tap.ok(r.returncode == 0, "%s: the daemon accepts its arguments and "
           "config (%s)" % (name, " ".join(c["args"][1:])),
           r.stdout + r.stderr)
    return args


def main():
    docs = load_all()
    bad = [(f, d.get("apiVersion"), d.get("kind")) for f, d in docs
           if (d.get("apiVersion"), d.get("kind")) not in KNOWN or
           not (d.get("metadata") or {}).get("name")]
    tap.ok(len(docs) >= 9 and not bad, "%d documents, each a known kind "
           "with a name" % len(docs), bad)
    objs = {"cm": by_kind(docs, "ConfigMap"), "sec": by_kind(docs, "Secret"),
            "pvc": by_kind(docs, "PersistentVolumeClaim")}
    deps = by_kind(docs, "Deployment")
    tap.eq(sorted(deps), ["slimserve-primary", "slimserve-replica"],
           "a primary and a replica Deployment")
    config_json = objs["cm"]["slimserve-config"]["data"]["slimserve.json"]
    tmp = tempfile.mkdtemp(prefix="ss-k8s-")
    pods = {}
    try:
        for name, dep in sorted(deps.items()):
            c, pspec, ports = check_deployment(name, dep, objs)
            check_config(name, c, pspec, config_json, tmp)
            pods[name] = (dep["spec"]["template"]["metadata"]["labels"],
                          ports)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    prim = deps["slimserve-primary"]["spec"]
    tap.ok(prim["replicas"] == 1 and prim["strategy"]["type"] == "Recreate"
           and "--role=primary" in
           prim["template"]["spec"]["containers"][0]["args"],
           "the primary is one pod, replaced with Recreate (one writer)")
    rep = deps["slimserve-replica"]["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in rep["containers"][0]["volumeMounts"]}
    tap.ok("--role=replica" in rep["containers"][0]["args"] and
           mounts["models"].get("readOnly") is True,
           "the replicas say role replica and mount the repository "
           "read-only")
    for name, svc in by_kind(docs, "Service").items():
        sel = svc["spec"]["selector"]
        hit = [n for n, (labels, ports) in pods.items()
               if matches(sel, labels) and all(
                   p["targetPort"] in ports or
                   p["targetPort"] in ports.values()
                   for p in svc["spec"]["ports"])]
        tap.eq(sorted(hit), sorted(pods), "Service %s selects every "
               "serving pod on a port they declare" % name)
    for name, pdb in by_kind(docs, "PodDisruptionBudget").items():
        sel = pdb["spec"]["selector"]["matchLabels"]
        tap.eq([n for n, (labels, _) in pods.items()
                if matches(sel, labels)], ["slimserve-replica"],
               "PodDisruptionBudget %s covers the replicas" % name)
    rts = by_kind(docs, "ClusterServingRuntime")
    for name, isvc in by_kind(docs, "InferenceService").items():
        m = isvc["spec"]["predictor"]["model"]
        rt = rts.get(m.get("runtime"))
        tap.ok(rt is not None and m["modelFormat"]["name"] in
               [f["name"] for f in rt["spec"]["supportedModelFormats"]] and
               "v2" in rt["spec"]["protocolVersions"],
               "InferenceService %s runs on the slimserve runtime" % name)
        args = rt["spec"]["containers"][0]["args"] if rt else []
        r = subprocess.run([BINARY] + [a for a in args if not a.startswith(
            "--model-repository")] + ["--model-repository=/nonexistent",
                                       "--check-config"],
                           capture_output=True, text=True, timeout=30)
        tap.ok(r.returncode == 0, "the runtime's arguments are accepted",
               r.stdout + r.stderr)
    if shutil.which("yamllint") is None:
        tap.skip("yamllint is not installed")
    else:
        r = subprocess.run(["yamllint", "-d", "relaxed", "-s", K8S],
                           capture_output=True, text=True)
        tap.ok(r.returncode == 0, "yamllint (relaxed) passes",
               r.stdout + r.stderr)


if __name__ == "__main__":
    main()
    sys.exit(tap.done())
