#!/usr/bin/env bash
# Starts a three-node Runplane instance on this machine: node-a, node-b, node-c on
# ports 8081-8083, sharing PostgreSQL (control store, audit, records), NATS and an
# S3-compatible server. Ctrl-C drains and stops all three.
#
#   examples/cluster/run.sh            # uses the services on their usual local ports
#
# Override RUNPLANE_PG_URL, RUNPLANE_NATS_URL, RUNPLANE_S3_ENDPOINT (and the S3 keys,
# RUNPLANE_S3_BUCKET) for other places; the bucket must exist. RUNPLANE_BIN runs another
# build of runplane (default: target/release/runplane, built first).
set -euo pipefail
cd "$(dirname "$0")/../.."
export RUNPLANE_PG_URL=${RUNPLANE_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export RUNPLANE_NATS_URL=${RUNPLANE_NATS_URL:-nats://127.0.0.1:4222}
export RUNPLANE_S3_ENDPOINT=${RUNPLANE_S3_ENDPOINT:-http://127.0.0.1:9000}
export RUNPLANE_S3_BUCKET=${RUNPLANE_S3_BUCKET:-runplane-cluster}
export RUNPLANE_S3_ACCESS_KEY_ID=${RUNPLANE_S3_ACCESS_KEY_ID:-test}
export RUNPLANE_S3_SECRET_ACCESS_KEY=${RUNPLANE_S3_SECRET_ACCESS_KEY:-test}
export RUNPLANE_ADMIN_TOKEN=${RUNPLANE_ADMIN_TOKEN:-cluster-demo-admin-token-0123456789}
export CLUSTER_DIR=${CLUSTER_DIR:-$PWD/target/cluster-demo}
mkdir -p "$CLUSTER_DIR/keys"
if [ -z "${RUNPLANE_BIN:-}" ]; then cargo build --release -q -p runplane; fi
BIN=${RUNPLANE_BIN:-target/release/runplane}
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
for n in a b c; do
    port=$((8080 + $(printf '%d' "'$n") - 96))
    # The first node creates the instance's keys; the others start once it is ready.
    NODE_ID=node-$n NODE_PORT=$port "$BIN" serve --config examples/cluster/node.toml 2> "$CLUSTER_DIR/node-$n.log" &
    pids+=($!)
    until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.2; done
    echo "node-$n ready on http://127.0.0.1:$port (log: $CLUSTER_DIR/node-$n.log)"
done
cat <<MSG

Three nodes, one instance. Try (admin token: \$RUNPLANE_ADMIN_TOKEN):
  export RUNPLANE_ADMIN_TOKEN=$RUNPLANE_ADMIN_TOKEN
  $BIN operate nodes --node http://127.0.0.1:8081
  $BIN tenant create acme --node http://127.0.0.1:8081                        # on node-a
  $BIN capability push FILE.wasm --name hello --version 1.0.0 --node http://127.0.0.1:8082
  $BIN deploy hello@1.0.0 --node http://127.0.0.1:8082                         # on node-b
  curl -H "Authorization: Bearer <acme's api key>" http://127.0.0.1:8083/apps/hello/   # on node-c
  for i in \$(seq 30); do curl -s -o /dev/null -w '%{http_code} ' -H "Authorization: Bearer <key>" http://127.0.0.1:808\$((i % 3 + 1))/apps/hello/; done
  $BIN operate drain-node node-b --node http://127.0.0.1:8081                  # watch: operate nodes
Ctrl-C drains and stops them all.
MSG
wait
