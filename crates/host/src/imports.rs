//! Refusing contamination (spec §2 invariant 1): a capability may import only
//! Runplane's ports and the virtualised WASI basics.

use wasmparser::{Parser, Payload, Validator, WasmFeatures};

use crate::HostError;

/// Every interface a capability may import, as `namespace:package/interface@version`.
/// A trailing `*` accepts any patch of that minor version (WASI 0.2.x releases are
/// compatible and wasmtime links them to the newest).
pub const ALLOWED_IMPORTS: &[&str] = &[
    "runplane:ports/types@0.1.*",
    "runplane:ports/records@0.1.*",
    "runplane:ports/events@0.1.*",
    "runplane:ports/messaging@0.1.*",
    "runplane:ports/blobs@0.1.*",
    "runplane:ports/secrets@0.1.*",
    "runplane:ports/telemetry@0.1.*",
    "wasi:keyvalue/store@0.2.0-draft2",
    "wasi:keyvalue/atomics@0.2.0-draft2",
    "wasi:keyvalue/batch@0.2.0-draft2",
    "wasi:config/store@0.2.0-rc.1",
    "wasi:logging/logging@0.1.0-draft",
    "wasi:http/types@0.2.*",
    "wasi:http/outgoing-handler@0.2.*",
    "wasi:io/error@0.2.*",
    "wasi:io/poll@0.2.*",
    "wasi:io/streams@0.2.*",
    "wasi:clocks/wall-clock@0.2.*",
    "wasi:clocks/monotonic-clock@0.2.*",
    "wasi:random/random@0.2.*",
    "wasi:random/insecure@0.2.*",
    "wasi:random/insecure-seed@0.2.*",
    "wasi:cli/environment@0.2.*",
    "wasi:cli/exit@0.2.*",
    "wasi:cli/stdin@0.2.*",
    "wasi:cli/stdout@0.2.*",
    "wasi:cli/stderr@0.2.*",
    "wasi:cli/terminal-input@0.2.*",
    "wasi:cli/terminal-output@0.2.*",
    "wasi:cli/terminal-stdin@0.2.*",
    "wasi:cli/terminal-stdout@0.2.*",
    "wasi:cli/terminal-stderr@0.2.*",
];

/// Which entry points a component offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Exports {
    pub http: bool,
    pub task: bool,
    pub message_handler: bool,
}

/// What [`crate::Host::inspect`] learned about an accepted component.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ComponentInfo {
    pub imports: Vec<String>,
    pub exports: Exports,
}

fn allowed(import: &str) -> bool {
    ALLOWED_IMPORTS.iter().any(|pattern| match pattern.strip_suffix('*') {
        Some(prefix) => import.starts_with(prefix) && is_patch(&import[prefix.len()..]),
        None => import == *pattern,
    })
}

fn is_patch(rest: &str) -> bool {
    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
}

/// Parses and validates `bytes` as a component and checks its top-level imports and exports.
pub(crate) fn inspect(_engine: &wasmtime::Engine, name: &str, bytes: &[u8]) -> Result<ComponentInfo, HostError> {
    let not_component = |reason: String| HostError::NotAComponent { name: name.to_owned(), reason };
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(not_component("it does not start with the WebAssembly magic bytes".into()));
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(not_component(
            "it is a core WebAssembly module, not a component (wasm32-wasip1 output?)".into(),
        ));
    }
    Validator::new_with_features(WasmFeatures::default())
        .validate_all(bytes)
        .map_err(|e| not_component(e.to_string()))?;

    let mut imports = Vec::new();
    let mut export_names = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| not_component(e.to_string()))? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    imports.push(import.map_err(|e| not_component(e.to_string()))?.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    export_names.push(export.map_err(|e| not_component(e.to_string()))?.name.name.to_owned());
                }
            }
            _ => {}
        }
    }

    let offending: Vec<String> = imports.iter().filter(|i| !allowed(i)).cloned().collect();
    if !offending.is_empty() {
        return Err(HostError::ForbiddenImports {
            name: name.to_owned(),
            offending,
            allowed: ALLOWED_IMPORTS.iter().map(|s| s.to_string()).collect(),
        });
    }
    let exports = Exports {
        http: export_names.iter().any(|e| e.starts_with("wasi:http/incoming-handler@0.2.")),
        task: export_names.iter().any(|e| e.starts_with("runplane:ports/task@0.1.")),
        message_handler: export_names.iter().any(|e| e.starts_with("runplane:ports/message-handler@0.1.")),
    };
    if !(exports.http || exports.task || exports.message_handler) {
        return Err(HostError::NoEntryPoint { name: name.to_owned() });
    }
    Ok(ComponentInfo { imports, exports })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_versions_exactly() {
        assert!(allowed("wasi:io/streams@0.2.0"));
        assert!(allowed("wasi:io/streams@0.2.12"));
        assert!(!allowed("wasi:io/streams@0.3.0"));
        assert!(!allowed("wasi:io/streams@0.2.x"));
        assert!(!allowed("wasi:sockets/tcp@0.2.0"));
        assert!(!allowed("wasi:filesystem/types@0.2.0"));
        assert!(!allowed("wasi:filesystem/preopens@0.2.0"));
        assert!(allowed("runplane:ports/records@0.1.0"));
        assert!(!allowed("runplane:ports/records"));
        assert!(allowed("wasi:keyvalue/store@0.2.0-draft2"));
        assert!(!allowed("wasi:keyvalue/store@0.2.0-draft"));
    }
}
