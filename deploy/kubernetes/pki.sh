#!/bin/sh
# Vigil's cluster PKI: a CA, the collector's certificate, one certificate
# per node, and the Secrets the manifests in this directory mount.
#
#   pki.sh DIR
#
# Run by an admin with kubectl access to the cluster and a
# `vigil-collector` binary, before `kubectl apply -k deploy/kubernetes`,
# and again whenever nodes join (a new node's agent cannot connect until
# then; the kubelet refreshes the mounted Secret within a minute or so).
#
# DIR holds the CA key: keep it off the cluster, backed up and private.
# Only certificates, the collector's key and the agents' keys go into
# Secrets; ca.key never does.
#
# The agent Secret holds every node's key, and every agent pod mounts it
# all: a DaemonSet's pods share one pod template and cannot each mount a
# per-node Secret. So root on one node could send alerts as another
# node. That is the trade-off of this layout.
#
# A node that left: `vigil-collector pki revoke DIR NODE`, then rerun this
# script; it publishes DIR/revoked/ as the Secret vigil-collector-revoked,
# which the running collector rereads.
#
# Environment: NAMESPACE (default vigil; it must match kustomization.yaml),
# VIGIL_COLLECTOR (default vigil-collector), KUBECTL (default kubectl).
set -eu

usage() {
    echo "usage: $0 DIR" >&2
    exit 2
}
[ "$#" -eq 1 ] || usage
dir=$1
[ -n "$dir" ] || usage

ns=${NAMESPACE:-vigil}
vc=${VIGIL_COLLECTOR:-vigil-collector}
kubectl=${KUBECTL:-kubectl}

# Keys written here (and any temporary file) are readable by us only.
umask 077

# 1. The CA and the collector's certificate, once. The names are those
#    agents and in-cluster clients use for the Service.
if [ ! -e "$dir/ca.crt" ]; then
    "$vc" pki init "$dir" \
        --san "vigil-collector.$ns.svc" \
        --san "vigil-collector.$ns.svc.cluster.local" \
        --san vigil-collector
fi
for f in ca.crt collector.crt collector.key; do
    if [ ! -f "$dir/$f" ]; then
        echo "$0: $dir/$f is missing; is $dir a directory made by 'vigil-collector pki init'?" >&2
        exit 1
    fi
done

# 2. A certificate for each node that has none; its name is the node's
#    name, which the agent is given as --hostname.
nodes=$("$kubectl" get nodes -o name)
for n in $nodes; do
    node=${n#node/}
    if [ ! -e "$dir/agents/$node.crt" ]; then
        "$vc" pki issue "$dir" --agent "$node"
    fi
done

# Creates or updates Secret $1 from the files that follow. Server-side
# apply: a client-side apply would copy the whole Secret into the
# last-applied annotation, and annotations are capped at 256 KiB, which
# a few hundred nodes' keys exceed. (A Secret itself is capped at 1 MiB.)
apply_secret() {
    name=$1
    shift
    n=$#
    while [ "$n" -gt 0 ]; do
        set -- "$@" "--from-file=$1"
        shift
        n=$((n - 1))
    done
    "$kubectl" create secret generic "$name" --namespace "$ns" "$@" \
        --dry-run=client -o yaml |
        "$kubectl" apply --server-side --field-manager=vigil-pki \
            --force-conflicts -f -
}

"$kubectl" create namespace "$ns" --dry-run=client -o yaml |
    "$kubectl" apply --server-side --field-manager=vigil-pki -f -

# 3. The agents' Secret: NODE.crt and NODE.key for every node, ca.crt.
set --
for crt in "$dir"/agents/*.crt; do
    [ -e "$crt" ] || continue
    key=${crt%.crt}.key
    if [ ! -f "$key" ]; then
        echo "$0: $key is missing (for $crt)" >&2
        exit 1
    fi
    set -- "$@" "$crt" "$key"
done
apply_secret vigil-agent-certs "$dir/ca.crt" "$@"

# 4. The collector's Secret: its certificate and key, and the CA its
#    clients' certificates must be signed by.
apply_secret vigil-collector-pki \
    "$dir/ca.crt" "$dir/collector.crt" "$dir/collector.key"

# 5. Revoked certificates (none at first: an empty Secret).
set --
for crt in "$dir"/revoked/*.crt; do
    [ -e "$crt" ] || continue
    set -- "$@" "$crt"
done
apply_secret vigil-collector-revoked "$@"
