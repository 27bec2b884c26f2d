# SPDX-License-Identifier: Apache-2.0
slimserveconfdir = $(sysconfdir)/slimserve
dist_slimserveconf_DATA = conf/slimserve.json
EXTRA_DIST += conf/models/digits-mlp/config.json \
	conf/models/digits-mlp/1/model.onnx \
	conf/models/digits-mlp/calib.npz conf/models/digits-mlp/val.npz
# Load balancers in front of replicas (docs/scale-out.md).
slimservelbdir = $(slimserveconfdir)/lb
dist_slimservelb_DATA = conf/lb/nginx-slimserve.conf conf/lb/haproxy.cfg
EXTRA_DIST += conf/k8s/config.yaml conf/k8s/primary.yaml \
	conf/k8s/replicas.yaml conf/k8s/kserve.yaml conf/k8s/Dockerfile
