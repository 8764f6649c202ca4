//! `runplane.toml`: the one configuration loader.
//!
//! The whole file is checked before the node starts and every problem is reported
//! with its place (`node.listen: …`), not just the first. `${VAR}` in a string value
//! is replaced by the environment variable `VAR` (an unset variable is a problem).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use runplane_host::SandboxConfig;
use serde::Deserialize;

/// How tenants' data is kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Many tenants share infrastructure; adapters scope every key by tenant.
    Shared,
    /// Each tenant has its own database file and blob root.
    Dedicated,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Shared => "shared",
            Mode::Dedicated => "dedicated",
        }
    }
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Stable node id (never derived from the host name).
    pub node_id: String,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The instance's mode: `shared` hosts many tenants; `dedicated` exactly one.
    pub mode: Mode,
    /// Admin token; when absent, one is generated at first start and written to
    /// `<data_dir>/admin-token` (mode 0600).
    pub admin_token: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    pub sandbox: SandboxConfig,
    /// Which adapter serves each port (only the embedded ones exist in this build).
    pub bindings: Bindings,
    /// `wasi:config` values per capability name.
    pub capability_config: BTreeMap<String, BTreeMap<String, String>>,
    /// Per-tenant overrides: `tenant → capability → key → value`.
    pub tenant_config: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>,
}

/// The adapter chosen for each port.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Bindings {
    pub records: String,
    pub kv: String,
    pub events: String,
    pub messaging: String,
    pub blobs: String,
    pub secrets: String,
}

impl Default for Bindings {
    fn default() -> Self {
        Bindings {
            records: "sqlite".into(),
            kv: "sqlite".into(),
            events: "sqlite".into(),
            messaging: "in-process".into(),
            blobs: "filesystem".into(),
            secrets: "sqlite".into(),
        }
    }
}

impl NodeConfig {
    /// The embedded defaults `runplane up` uses.
    pub fn embedded(listen: SocketAddr, data_dir: PathBuf) -> Self {
        NodeConfig {
            node_id: "node-1".into(),
            listen,
            data_dir,
            mode: Mode::Shared,
            admin_token: None,
            max_body_bytes: 1 << 20,
            sandbox: SandboxConfig::default(),
            bindings: Bindings::default(),
            capability_config: BTreeMap::new(),
            tenant_config: BTreeMap::new(),
        }
    }

    /// Reads and validates a `runplane.toml`.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            problems: vec![format!("cannot read the file: {e}")],
        })?;
        Self::parse(&text, |k| std::env::var(k).ok()).map_err(|problems| ConfigError {
            file: path.display().to_string(),
            problems,
        })
    }

    /// Parses configuration text; `env` resolves `${VAR}` references.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| vec![format!("TOML syntax: {e}")])?;
        let mut problems = Vec::new();
        substitute_env(&mut table, "", &env, &mut problems);
        let mut c = Checker { problems };

        let mut cfg = NodeConfig::embedded(
            "127.0.0.1:8080".parse().expect("a valid literal address"),
            PathBuf::from("./data"),
        );
        c.only_keys(&table, "", &["node", "sandbox", "bindings", "config", "tenant_config"]);

        if let Some(node) = c.table(&table, "node") {
            c.only_keys(node, "node", &["id", "listen", "data_dir", "mode", "admin_token", "max_body_bytes"]);
            if let Some(v) = c.get::<String>(node, "node", "id") {
                if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                    c.problem("node.id", "must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'");
                } else {
                    cfg.node_id = v;
                }
            }
            if let Some(v) = c.get::<String>(node, "node", "listen") {
                match v.parse() {
                    Ok(a) => cfg.listen = a,
                    Err(_) => c.problem("node.listen", &format!("{v:?} is not a socket address; write it like \"127.0.0.1:8080\"")),
                }
            }
            if let Some(v) = c.get::<String>(node, "node", "data_dir") {
                cfg.data_dir = PathBuf::from(v);
            }
            if let Some(v) = c.get::<Mode>(node, "node", "mode") {
                cfg.mode = v;
            }
            if let Some(v) = c.get::<String>(node, "node", "admin_token") {
                if v.len() < 24 {
                    c.problem("node.admin_token", "is shorter than 24 characters; use a long random value (or omit it to have one generated)");
                } else {
                    cfg.admin_token = Some(v);
                }
            }
            if let Some(v) = c.get::<u64>(node, "node", "max_body_bytes") {
                if v == 0 || v > 64 << 20 {
                    c.problem("node.max_body_bytes", "must be between 1 and 67108864");
                } else {
                    cfg.max_body_bytes = v as usize;
                }
            }
        }
        if let Some(sb) = table.get("sandbox") {
            match sb.clone().try_into::<SandboxConfig>() {
                Ok(s) => {
                    if s.memory_limit_bytes < (1 << 20) {
                        c.problem("sandbox.memory_limit_bytes", "must be at least 1048576 (1 MiB)");
                    }
                    if s.deadline_ms == 0 {
                        c.problem("sandbox.deadline_ms", "must be positive");
                    }
                    if s.max_instances == 0 {
                        c.problem("sandbox.max_instances", "must be positive");
                    }
                    cfg.sandbox = s;
                }
                Err(e) => c.problem("sandbox", e.message()),
            }
        }
        if let Some(b) = c.table(&table, "bindings") {
            let known: [(&str, &[&str]); 6] = [
                ("records", &["sqlite"]),
                ("kv", &["sqlite"]),
                ("events", &["sqlite"]),
                ("messaging", &["in-process"]),
                ("blobs", &["filesystem"]),
                ("secrets", &["sqlite"]),
            ];
            c.only_keys(b, "bindings", &known.map(|(k, _)| k));
            for (port, adapters) in known {
                if let Some(v) = c.get::<String>(b, "bindings", port) {
                    if !adapters.contains(&v.as_str()) {
                        c.problem(&format!("bindings.{port}"), &format!("adapter {v:?} is not available in this build; choose one of: {}", adapters.join(", ")));
                    } else {
                        let slot = match port {
                            "records" => &mut cfg.bindings.records,
                            "kv" => &mut cfg.bindings.kv,
                            "events" => &mut cfg.bindings.events,
                            "messaging" => &mut cfg.bindings.messaging,
                            "blobs" => &mut cfg.bindings.blobs,
                            _ => &mut cfg.bindings.secrets,
                        };
                        *slot = v;
                    }
                }
            }
        }
        if let Some(conf) = table.get("config") {
            match conf.clone().try_into::<BTreeMap<String, BTreeMap<String, String>>>() {
                Ok(m) => cfg.capability_config = m,
                Err(e) => c.problem("config", &format!("must map capability names to tables of string values: {}", e.message())),
            }
        }
        if let Some(conf) = table.get("tenant_config") {
            match conf.clone().try_into::<BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>>() {
                Ok(m) => {
                    for t in m.keys() {
                        if runplane_ports::TenantId::new(t).is_err() {
                            c.problem(&format!("tenant_config.{t}"), "is not a valid tenant id (a-z, 0-9, '-')");
                        }
                    }
                    cfg.tenant_config = m;
                }
                Err(e) => c.problem("tenant_config", &format!("must map tenant → capability → key → string value: {}", e.message())),
            }
        }
        if c.problems.is_empty() { Ok(cfg) } else { Err(c.problems) }
    }
}

/// Every problem found in a configuration file.
#[derive(Debug, thiserror::Error)]
#[error("{file} has {} problem(s); fix them and start again:\n  {}", .problems.len(), .problems.join("\n  "))]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<String>,
}

struct Checker {
    problems: Vec<String>,
}

impl Checker {
    fn problem(&mut self, place: &str, what: &str) {
        self.problems.push(format!("{place}: {what}"));
    }

    fn only_keys(&mut self, table: &toml::Table, place: &str, known: &[&str]) {
        for key in table.keys() {
            if !known.contains(&key.as_str()) {
                let full = if place.is_empty() { key.clone() } else { format!("{place}.{key}") };
                self.problem(&full, &format!("unknown key; known keys here: {}", known.join(", ")));
            }
        }
    }

    fn table<'t>(&mut self, table: &'t toml::Table, key: &str) -> Option<&'t toml::Table> {
        match table.get(key) {
            None => None,
            Some(toml::Value::Table(t)) => Some(t),
            Some(_) => {
                self.problem(key, "must be a table");
                None
            }
        }
    }

    fn get<T: serde::de::DeserializeOwned>(&mut self, table: &toml::Table, place: &str, key: &str) -> Option<T> {
        let v = table.get(key)?;
        match v.clone().try_into::<T>() {
            Ok(x) => Some(x),
            Err(e) => {
                self.problem(&format!("{place}.{key}"), &format!("{} (found {v})", e.message()));
                None
            }
        }
    }
}

fn substitute_env(table: &mut toml::Table, place: &str, env: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<String>) {
    for (k, v) in table.iter_mut() {
        let here = if place.is_empty() { k.clone() } else { format!("{place}.{k}") };
        substitute_value(v, &here, env, problems);
    }
}

fn substitute_value(v: &mut toml::Value, place: &str, env: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<String>) {
    match v {
        toml::Value::String(s) => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                match after.find('}') {
                    Some(end) => {
                        let name = &after[..end];
                        match env(name) {
                            Some(value) => out.push_str(&value),
                            None => problems.push(format!("{place}: environment variable {name} is not set")),
                        }
                        rest = &after[end + 1..];
                    }
                    None => {
                        problems.push(format!("{place}: unterminated ${{ in value"));
                        rest = "";
                    }
                }
            }
            out.push_str(rest);
            *s = out;
        }
        toml::Value::Table(t) => substitute_env(t, place, env, problems),
        toml::Value::Array(a) => {
            for (i, item) in a.iter_mut().enumerate() {
                substitute_value(item, &format!("{place}[{i}]"), env, problems);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_problem_with_its_place() {
        let text = r#"
            [node]
            listen = "not an address"
            mode = "sideways"
            colour = "blue"
            admin_token = "${MISSING_TOKEN}"
            [bindings]
            records = "oracle"
            [sandbox]
            deadline_ms = 0
        "#;
        let problems = NodeConfig::parse(text, |_| None).expect_err("invalid");
        let all = problems.join("\n");
        for needle in ["node.listen", "node.mode", "node.colour", "MISSING_TOKEN", "bindings.records", "sandbox.deadline_ms"] {
            assert!(all.contains(needle), "missing {needle} in:\n{all}");
        }
    }

    #[test]
    fn substitutes_environment_variables() {
        let text = "[node]\nadmin_token = \"${TOKEN}\"\nlisten = \"127.0.0.1:9000\"\n[config.orders]\ncurrency = \"CHF\"\n";
        let cfg = NodeConfig::parse(text, |k| (k == "TOKEN").then(|| "x".repeat(32))).expect("valid");
        assert_eq!(cfg.admin_token.as_deref(), Some("x".repeat(32).as_str()));
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.capability_config["orders"]["currency"], "CHF");
    }
}
