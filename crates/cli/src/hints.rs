//! The admin API's errors say which endpoint fixes a problem (`push it with POST
//! /v1/capabilities first`): right for an API client, not for someone at the command
//! line. [`for_cli`] names the command that calls that endpoint instead. The node keeps
//! one wording for every client; this table is the only place that knows both.

/// Endpoints an error may point at, and the command that calls each. `{x}` in a path
/// matches one segment (or a query value); in the command, the segment found there, or
/// the placeholder's name in capitals when the message names no concrete value.
const COMMANDS: &[(&str, &str, &str)] = &[
    ("GET", "/v1/tenants", "runplane tenant list"),
    ("POST", "/v1/tenants", "runplane tenant create ID"),
    ("GET", "/v1/cluster/nodes", "runplane operate nodes"),
    ("GET", "/v1/jobs/{id}", "runplane job show {id}"),
    ("GET", "/v1/jobs", "runplane job list"),
    ("POST", "/v1/jobs", "runplane job submit ROUTE INPUT"),
    ("POST", "/v1/rollouts/{id}/abort", "runplane rollout abort {id}"),
    ("POST", "/v1/rollouts/{id}/promote", "runplane rollout promote {id}"),
    ("GET", "/v1/rollouts?route={route}", "runplane rollout status --route {route}"),
    ("GET", "/v1/rollouts", "runplane rollout status --route ROUTE"),
    ("POST", "/v1/rollouts", "runplane rollout start ROUTE NAME@VERSION"),
    ("POST", "/v1/deployments", "runplane deploy NAME@VERSION --route ROUTE"),
    ("POST", "/v1/ca/rotate", "runplane ca rotate"),
    ("POST", "/v1/ca", "runplane ca init"),
    ("GET", "/v1/ca/certificates", "runplane ca list"),
    ("GET", "/v1/ca", "runplane ca list"),
    ("POST", "/v1/tenants/{tenant}/provision", "runplane tenant provision {tenant}"),
    ("POST", "/v1/tenants/{tenant}/resume", "runplane tenant resume {tenant}"),
    ("POST", "/v1/tenants/{tenant}/tokens", "runplane token mint ROLE --subject WHO --tenant {tenant}"),
    ("POST", "/v1/tokens", "runplane token mint ROLE --subject WHO"),
    ("GET", "/v1/config/versions?scope={scope}", "runplane config history --scope {scope}"),
    ("PUT", "/v1/environments/{env}", "runplane env set {env} FILE.json"),
    ("POST", "/v1/environments/{env}/promote", "runplane env promote {env} NAME@VERSION"),
    ("POST", "/v1/capabilities", "runplane capability push FILE.wasm --name NAME --version VERSION"),
    ("POST", "/v1/contracts", "runplane contract register FILE.json --route ROUTE"),
];

const METHODS: [&str; 4] = ["GET ", "POST ", "PUT ", "DELETE "];

/// `message` with every `METHOD /v1/…` that [`COMMANDS`] knows replaced by its command
/// in backticks; anything else is left as it is.
///
/// ```text
/// "orders@9.9.9 has not been pushed; push it with POST /v1/capabilities first"
/// → "orders@9.9.9 has not been pushed; push it with `runplane capability push FILE.wasm --name NAME --version VERSION` first"
/// ```
pub fn for_cli(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some((at, method)) = METHODS.iter().filter_map(|m| rest.find(&format!("{m}/v1/")).map(|i| (i, *m))).min() {
        let path_start = at + method.len();
        let path_len = rest[path_start..].find(|c: char| c.is_whitespace() || matches!(c, ';' | ',' | ')' | '`' | '"')).unwrap_or(rest.len() - path_start);
        let path = rest[path_start..path_start + path_len].trim_end_matches('.');
        out.push_str(&rest[..at]);
        match command(method.trim_end(), path) {
            Some(cmd) => out.push_str(&format!("`{cmd}`")),
            None => out.push_str(&rest[at..path_start + path.len()]),
        }
        rest = &rest[path_start + path.len()..];
    }
    out.push_str(rest);
    out
}

/// The command for `method path`, if the table has one.
fn command(method: &str, path: &str) -> Option<String> {
    COMMANDS.iter().filter(|(m, _, _)| *m == method).find_map(|(_, pattern, template)| {
        let mut cmd = (*template).to_owned();
        let (pattern_path, pattern_query) = pattern.split_once('?').unwrap_or((pattern, ""));
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let (want, got): (Vec<&str>, Vec<&str>) = (pattern_path.split('/').collect(), path.split('/').collect());
        if want.len() != got.len() || pattern_query.is_empty() != query.is_empty() {
            return None;
        }
        let pairs = want.into_iter().zip(got).chain(pattern_query.split('&').zip(query.split('&')));
        for (w, g) in pairs {
            match w.find('{') {
                Some(open) if g.starts_with(&w[..open]) => {
                    let name = &w[open..];
                    let value = &g[open..];
                    // A message that names no concrete value says `{id}` itself.
                    let shown = if value.starts_with('{') || value.is_empty() { name.trim_matches(['{', '}']).to_uppercase() } else { value.to_owned() };
                    cmd = cmd.replace(name, &shown);
                }
                Some(_) => return None,
                None if w == g => {}
                None => return None,
            }
        }
        Some(cmd)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_become_commands() {
        for (message, expected) in [
            (
                "orders@9.9.9 has not been pushed; push it with POST /v1/capabilities first",
                "orders@9.9.9 has not been pushed; push it with `runplane capability push FILE.wasm --name NAME --version VERSION` first",
            ),
            ("tenant nobody does not exist; list tenants with GET /v1/tenants", "tenant nobody does not exist; list tenants with `runplane tenant list`"),
            (
                "scope capability:orders has no revision 9; list them with GET /v1/config/versions?scope=capability:orders",
                "scope capability:orders has no revision 9; list them with `runplane config history --scope capability:orders`",
            ),
            (
                "a tenant token belongs to a tenant; mint it with POST /v1/tenants/{id}/tokens",
                "a tenant token belongs to a tenant; mint it with `runplane token mint ROLE --subject WHO --tenant TENANT`",
            ),
            (
                "fix the backend and POST /v1/tenants/acme/provision to resume (its key: k1)",
                "fix the backend and `runplane tenant provision acme` to resume (its key: k1)",
            ),
            ("promote it with POST /v1/environments/prod/promote", "promote it with `runplane env promote prod NAME@VERSION`"),
            ("see GET /v1/openapi.json.", "see GET /v1/openapi.json."),
            ("no endpoint named here", "no endpoint named here"),
        ] {
            assert_eq!(for_cli(message), expected);
        }
    }

    /// Every endpoint that an error of the node names, in a string of its source,
    /// becomes a command: a new hint in the node needs a row in [`COMMANDS`].
    #[test]
    fn every_endpoint_the_node_names_in_an_error_has_a_command() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/src");
        let mut files = vec![src.clone()];
        let mut hints = Vec::new();
        while let Some(p) = files.pop() {
            if p.is_dir() {
                files.extend(std::fs::read_dir(&p).expect("read dir").map(|e| e.expect("entry").path()));
                continue;
            }
            let text = std::fs::read_to_string(&p).expect("read");
            for line in text.lines() {
                let code = line.trim_start();
                // Doc comments, route tables, OpenAPI annotations and log lines are not errors.
                if code.starts_with("//") || code.starts_with("#[") || code.contains("r(\"") || code.contains("tracing::") || !code.contains('"') {
                    continue;
                }
                for m in METHODS {
                    let mut from = 0;
                    while let Some(i) = line[from..].find(&format!("{m}/v1/")) {
                        let start = from + i;
                        let end = line[start + m.len()..].find([' ', '"', ';', ',', ')']).map_or(line.len(), |e| start + m.len() + e);
                        // Format strings: `{{id}}` prints `{id}`, `{}` and `{name}` a value.
                        let hint = line[start..end].replace("{{", "{").replace("}}", "}").replace("{}", "x");
                        hints.push(hint);
                        from = end;
                    }
                }
            }
        }
        assert!(hints.len() >= 5, "the scan finds the node's hints: {hints:?}");
        for hint in hints {
            let rewritten = for_cli(&hint);
            assert!(!rewritten.contains("/v1/"), "{}: the node points at {hint:?}; add its command to hints::COMMANDS", src.display());
        }
    }
}
