//! Runtime contracts (spec §6.6): a task export bound to JSON Schemas for its input and
//! output, the ports it may need and the limits it runs under. The contract's identity
//! is the hash of its canonical content, so any change makes a different contract and
//! a contract whose stated id does not match its content is a forgery.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::PROTOCOL_VERSION;

/// Limits a contract imposes on each execution; each is at most the tenant's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// CPU budget of one execution, in fuel.
    pub max_fuel: u64,
    /// Linear memory one execution may grow to.
    pub max_memory_mb: u64,
    /// Wall-clock deadline of one execution.
    pub deadline_ms: u64,
    /// Largest output, in bytes.
    pub max_output_bytes: u64,
}

/// `RuntimeContract` as spec §6.6 names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeContract {
    /// `sha256:<hex>` of the canonical JSON of every other field. Optional when
    /// registering (it is computed); if given, it must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract_id: Option<String>,
    /// The seed of every execution under this contract: the same input gives the same
    /// output.
    pub execution_seed: u64,
    #[schema(value_type = Object)]
    pub input_schema: Value,
    #[schema(value_type = Object)]
    pub output_schema: Value,
    /// Ports the task needs (`records`, `kv`, `events`, `messaging`, `blobs`, `http`,
    /// `config`, `secrets`, `telemetry`); checked against what the tenant may use and
    /// what the component imports.
    pub capability_requirements: Vec<String>,
    pub resource_limits: ResourceLimits,
    pub protocol_version: String,
}

/// Why a contract was refused or an execution under it was stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("the contract is invalid: {0}")]
    Invalid(String),
    #[error("the contract's id {stated} does not match its content (its content hashes to {computed}); the contract was altered after its id was issued")]
    Forged { stated: String, computed: String },
    #[error("the input does not match the contract's input_schema: {0}")]
    Input(String),
    #[error("the output does not match the contract's output_schema: {0}")]
    Output(String),
}

/// Ports a contract may name.
pub const KNOWN_PORTS: &[&str] = &["records", "kv", "events", "messaging", "blobs", "http", "config", "secrets", "telemetry"];

impl RuntimeContract {
    /// The id derived from the content: `sha256:` + hash of the canonical JSON of the
    /// contract without its `contract_id`.
    pub fn computed_id(&self) -> Result<String, ContractError> {
        let mut body = self.clone();
        body.contract_id = None;
        runplane_cjson::hash_serialize(&body)
            .map(|h| format!("sha256:{h}"))
            .map_err(|e| ContractError::Invalid(format!("it cannot be canonicalised: {e}")))
    }

    /// Checks the contract and compiles its schemas. A stated id must equal the computed
    /// one; the result always carries the computed id.
    pub fn validate(mut self) -> Result<ValidatedContract, ContractError> {
        let computed = self.computed_id()?;
        if let Some(stated) = &self.contract_id
            && *stated != computed
        {
            return Err(ContractError::Forged { stated: stated.clone(), computed });
        }
        let mut problems = Vec::new();
        if self.protocol_version.split('.').next() != PROTOCOL_VERSION.split('.').next() {
            problems.push(format!("protocol_version {:?} is not supported (this node speaks {PROTOCOL_VERSION})", self.protocol_version));
        }
        for r in &self.capability_requirements {
            if !KNOWN_PORTS.contains(&r.as_str()) {
                problems.push(format!("capability requirement {r:?} is not a port (known: {})", KNOWN_PORTS.join(", ")));
            }
        }
        let l = &self.resource_limits;
        if l.max_fuel == 0 || l.max_memory_mb == 0 || l.deadline_ms == 0 || l.max_output_bytes == 0 {
            problems.push("every resource limit must be at least 1".into());
        }
        let input = compile("input_schema", &self.input_schema).map_err(|e| problems.push(e)).ok();
        let output = compile("output_schema", &self.output_schema).map_err(|e| problems.push(e)).ok();
        match (input, output) {
            (Some(input), Some(output)) if problems.is_empty() => {
                self.contract_id = Some(computed.clone());
                Ok(ValidatedContract { id: computed, contract: self, input, output })
            }
            _ => Err(ContractError::Invalid(problems.join("; "))),
        }
    }
}

fn compile(what: &str, schema: &Value) -> Result<jsonschema::Validator, String> {
    // No resolver for http or files is compiled in: a schema cannot make the node fetch.
    jsonschema::validator_for(schema).map_err(|e| format!("{what} is not a valid JSON Schema: {e}"))
}

/// A contract that passed [`RuntimeContract::validate`], with compiled schemas.
pub struct ValidatedContract {
    pub id: String,
    pub contract: RuntimeContract,
    input: jsonschema::Validator,
    output: jsonschema::Validator,
}

impl std::fmt::Debug for ValidatedContract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidatedContract").field("id", &self.id).finish_non_exhaustive()
    }
}

impl ValidatedContract {
    /// Checks an input before execution.
    pub fn check_input(&self, input: &Value) -> Result<(), ContractError> {
        describe(&self.input, input).map_err(ContractError::Input)
    }

    /// Checks an output after execution.
    pub fn check_output(&self, output: &Value) -> Result<(), ContractError> {
        describe(&self.output, output).map_err(ContractError::Output)
    }
}

/// The first few violations, each with where it is, or `Ok`.
fn describe(validator: &jsonschema::Validator, value: &Value) -> Result<(), String> {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .take(5)
        .map(|e| {
            let at = e.instance_path().to_string();
            format!("at {}: {e}", if at.is_empty() { "/" } else { at.as_str() })
        })
        .collect();
    if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn contract() -> RuntimeContract {
        RuntimeContract {
            contract_id: None,
            execution_seed: 7,
            input_schema: json!({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer", "minimum": 0}}}),
            output_schema: json!({"type": "object", "required": ["sum"]}),
            capability_requirements: vec!["records".into()],
            resource_limits: ResourceLimits { max_fuel: 1_000_000, max_memory_mb: 16, deadline_ms: 1000, max_output_bytes: 4096 },
            protocol_version: "1.0".into(),
        }
    }

    #[test]
    fn identity_follows_content() {
        let a = contract().validate().unwrap();
        let mut changed = contract();
        changed.output_schema = json!({"type": "object"});
        let b = changed.validate().unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(a.id, contract().validate().unwrap().id, "deterministic");
    }

    #[test]
    fn a_tampered_contract_is_a_forgery() {
        let mut c = contract();
        c.contract_id = Some(contract().computed_id().unwrap());
        c.validate().unwrap();
        let mut t = contract();
        t.contract_id = Some(contract().computed_id().unwrap());
        t.resource_limits.max_fuel *= 10;
        assert!(matches!(t.validate(), Err(ContractError::Forged { .. })));
    }

    #[test]
    fn inputs_and_outputs_are_checked_with_their_place() {
        let c = contract().validate().unwrap();
        c.check_input(&json!({"n": 3})).unwrap();
        let e = c.check_input(&json!({"n": -1})).unwrap_err().to_string();
        assert!(e.contains("/n"), "{e}");
        assert!(c.check_output(&json!({})).is_err());
    }

    #[test]
    fn bad_contracts_list_every_problem() {
        let mut c = contract();
        c.input_schema = json!({"type": 12});
        c.capability_requirements.push("sockets".into());
        c.protocol_version = "2.0".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("input_schema") && e.contains("sockets") && e.contains("2.0"), "{e}");
    }
}
