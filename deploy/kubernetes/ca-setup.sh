#!/bin/sh
# ca-setup.sh - print the Kubernetes objects that hold remora-cp's CA, as YAML
# for `kubectl apply -f -` (docs/kubernetes.md, "Control plane"):
#   - Secret remora-system/remora-ca: root-cert.pem and root-key.pem, a new root
#     made by `remora-cp --ca-init` (or the one already in --ca-dir);
#   - ConfigMap remora-ca-root-cert with root-cert.pem in every namespace given,
#     the trust anchor injected sidecars mount (Istio's istio-ca-root-cert).
# Workloads' tokens are checked with a TokenReview (nothing to write here); an
# optional static tokens Secret (remora-ca-tokens, --ca-tokens) is yours to
# write if you also use tokens that are not Kubernetes tokens.
#
# usage: ca-setup.sh [--ca-dir DIR] [--remora-cp BIN] [--namespace NS]... 
#   --ca-dir DIR      where the root is kept (created with --ca-init if empty;
#                     default ./remora-ca) - keep root-key.pem secret
#   --remora-cp BIN   the remora-cp binary (default: remora-cp on PATH)
#   --namespace NS    a namespace whose sidecars need the root (repeatable)
set -eu

ca_dir=./remora-ca
cp_bin=remora-cp
namespaces=""
while [ $# -gt 0 ]; do
	case "$1" in
	--ca-dir) ca_dir=$2; shift 2 ;;
	--remora-cp) cp_bin=$2; shift 2 ;;
	--namespace) namespaces="$namespaces $2"; shift 2 ;;
	-h|--help) sed -n '2,17p' "$0"; exit 0 ;;
	*) echo "ca-setup.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
for ns in $namespaces; do
	case "$ns" in
	*[!a-z0-9-]*|-*|"") echo "ca-setup.sh: '$ns' is not a namespace name" >&2; exit 2 ;;
	esac
done

if [ ! -f "$ca_dir/root-cert.pem" ] || [ ! -f "$ca_dir/root-key.pem" ]; then
	"$cp_bin" --ca-init --ca-dir "$ca_dir" >/dev/null
fi

b64() { base64 -w0 < "$1"; }
# the PEM as a YAML literal block, indented by $2 spaces
block() { sed "s/^/$2/" "$1"; }

cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: remora-ca
  namespace: remora-system
  labels:
    app: remora-cp
type: Opaque
data:
  root-cert.pem: $(b64 "$ca_dir/root-cert.pem")
  root-key.pem: $(b64 "$ca_dir/root-key.pem")
YAML
for ns in $namespaces; do
	cat <<YAML
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: remora-ca-root-cert
  namespace: $ns
  labels:
    app: remora-cp
data:
  root-cert.pem: |
$(block "$ca_dir/root-cert.pem" "    ")
YAML
done
