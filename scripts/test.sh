#!/usr/bin/env bash
# Runs Runplane's whole test suite: installs the wasm target if needed, makes sure the
# services the tests talk to are up (PostgreSQL, MariaDB/MySQL, NATS JetStream,
# RabbitMQ, an S3-compatible server), then runs every test. Used by README and .ci/run.
#
# Outside CI a service that cannot be started makes its tests print SKIPPED; with
# CI=true the run fails instead (tests never pass by skipping in CI).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "==> installing the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi

if ! command -v python3 >/dev/null; then
    echo "error: python3 is required (canonical JSON is tested against Python's json module)" >&2
    exit 1
fi

# port_open HOST PORT: whether something listens there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# ensure NAME PORT START-COMMAND...: starts the service if its port is closed, then waits for it.
ensure() {
    local name=$1 port=$2; shift 2
    if port_open 127.0.0.1 "$port"; then return 0; fi
    echo "==> starting $name"
    ("$@") >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do
        if port_open 127.0.0.1 "$port"; then return 0; fi
        sleep 1
    done
    echo "warning: $name is not listening on port $port" >&2
    return 1
}

# curl and openssl talk TLS to a node from outside Rust (the HTTPS tests).
for tool in curl openssl; do
    if ! command -v "$tool" >/dev/null; then
        echo "==> installing $tool"
        if command -v apt-get >/dev/null; then
            (apt-get update -qq && apt-get install -y -qq "$tool") >/dev/null 2>&1 || sudo -n apt-get install -y -qq "$tool" >/dev/null 2>&1 || true
        fi
        if ! command -v "$tool" >/dev/null; then
            echo "error: $tool is required (the TLS tests run it against a node); install it" >&2
            exit 1
        fi
    fi
done

# Prometheus (Debian's package) is the real server a rollout analysis queries in the
# node's tests; without it they print SKIPPED, or fail under CI=true.
if ! command -v prometheus >/dev/null && command -v apt-get >/dev/null; then
    echo "==> installing prometheus (Debian's package)"
    (apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus) >/dev/null 2>&1 \
        || sudo -n sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus' >/dev/null 2>&1 || true
fi

missing=()
ensure PostgreSQL 5432 sh -c 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start' || missing+=(PostgreSQL)
ensure MariaDB 3306 start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || missing+=(MariaDB)
ensure NATS 4222 start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || missing+=(NATS)
ensure RabbitMQ 5672 rabbitmq-server -detached || missing+=(RabbitMQ)

# The S3-compatible server: moto's, from PyPI, on port 9000.
S3_PORT=${RUNPLANE_TEST_S3_PORT:-9000}
if ! port_open 127.0.0.1 "$S3_PORT"; then
    if ! command -v moto_server >/dev/null; then
        echo "==> installing moto (an S3-compatible test server) with pip"
        python3 -m pip install --quiet 'moto[server]' || true
    fi
    if command -v moto_server >/dev/null; then
        mkdir -p target
        nohup moto_server -H 127.0.0.1 -p "$S3_PORT" >target/moto.log 2>&1 &
    fi
    ensure "S3 server (moto)" "$S3_PORT" true || missing+=("S3 server (moto)")
fi
export RUNPLANE_TEST_S3_ENDPOINT=${RUNPLANE_TEST_S3_ENDPOINT:-http://127.0.0.1:$S3_PORT}

# schemathesis (PyPI) checks the node's OpenAPI document against the node itself.
if ! python3 -m schemathesis.cli --version >/dev/null 2>&1; then
    echo "==> installing schemathesis (OpenAPI contract testing) with pip"
    python3 -m pip install --quiet 'schemathesis>=4,<5' || true
fi

# kubernetes-validate (PyPI) checks the manifests under deploy/kubernetes.
if ! python3 -c 'import kubernetes_validate' >/dev/null 2>&1; then
    echo "==> installing kubernetes-validate (Kubernetes manifest validation) with pip"
    python3 -m pip install --quiet kubernetes-validate || true
fi

if [ ${#missing[@]} -gt 0 ]; then
    if [ "${CI:-}" = "true" ]; then
        echo "error: CI=true and these services are not running: ${missing[*]}" >&2
        exit 1
    fi
    echo "warning: not running: ${missing[*]}; their tests will print SKIPPED" >&2
fi

echo "==> cargo test --workspace"
cargo test --workspace --no-fail-fast 2>&1
