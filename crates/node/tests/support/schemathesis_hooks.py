"""Schemathesis hooks for the node's OpenAPI test (schemathesis.rs).

Component uploads are `application/wasm`: bodies are random bytes or the real `orders`
component (its path in RUNPLANE_ST_COMPONENT), so a push can succeed. A contract's input
is checked against that contract's own schema, which the document cannot state: some
bodies are the input the test's contract and the `orders` task accept. A contract the
component can run under needs every port it imports: some registrations are the test's
own contract again (RUNPLANE_ST_CONTRACT), which the node answers 200. Issuing a
certificate needs a signed CSR: some bodies carry the one the test made. A schema-valid
create that carries an `Idempotency-Key` gets a key of its own: the same key on another
request is refused (422) by design, which no schema can say. An operation on a rollout
that names a `revision` acts only at that revision (409 otherwise), which changes as the
run goes: every other schema-valid case leaves it out. A job's retry policy has a
maximum interval at least its initial one (default 300000 and 1000), which the schema
cannot state either: a schema-valid case that breaks it is mended.
"""

import json
import os
import uuid

import schemathesis
from hypothesis import strategies as st

with open(os.environ["RUNPLANE_ST_COMPONENT"], "rb") as f:
    COMPONENT = f.read()

CONTRACT = json.loads(os.environ["RUNPLANE_ST_CONTRACT"])
# A certificate signing request the test made (a CSR's signature cannot be generated).
CSR = os.environ["RUNPLANE_ST_CSR"]

schemathesis.openapi.media_type("application/wasm", st.one_of(st.just(COMPONENT), st.binary(max_size=64)))


@schemathesis.serializer("application/wasm")
def wasm(ctx, value):
    return value if isinstance(value, bytes) else bytes(str(value), "utf-8")


# Every other schema-valid case of these operations carries the real input instead of
# the generated one (negative cases are left alone: they must stay invalid).
REAL_BODIES = {
    "/v1/contracts/{id}/execute": [{"op": "count"}, {"op": "total", "item": "tea"}],
    "/v1/contracts": [CONTRACT],
    "/v1/ca/certificates": [{"kind": "client", "subject": "schemathesis", "csr_pem": CSR}],
    "/v1/release-groups": [
        {"members": [{"route": "g-scratch-a", "capability": "burn@1.0.0"}, {"route": "g-scratch-b", "capability": "burn@1.0.0"}], "strategy": "canary"}
    ],
}
_seen = {}


@schemathesis.hook
def map_case(context, case):
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if positive and case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = str(uuid.uuid4())
    if positive and case.operation.path.startswith(("/v1/rollouts/{id}/", "/v1/release-groups/{id}/")) and case.query and "revision" in case.query:
        n = _seen.get("revision", 0)
        _seen["revision"] = n + 1
        if n % 2:
            del case.query["revision"]
    if positive and case.operation.path == "/v1/jobs" and isinstance(case.body, dict) and isinstance(case.body.get("retry"), dict):
        retry = case.body["retry"]
        initial = retry.get("initial_interval_ms", 1000)
        if isinstance(initial, (int, float)) and retry.get("maximum_interval_ms", 300000) < initial:
            retry["maximum_interval_ms"] = initial
    real = REAL_BODIES.get(case.operation.path)
    if real is None or case.operation.method.upper() != "POST" or case.meta is None or not case.meta.generation.mode.is_positive:
        return case
    n = _seen.get(case.operation.path, 0)
    _seen[case.operation.path] = n + 1
    if n % 2:
        case.body = real[(n // 2) % len(real)]
    return case
