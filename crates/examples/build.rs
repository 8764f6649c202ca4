//! Builds the guest workspace in `capabilities/` for wasm32-wasip2 and embeds each
//! component. Installs the target with rustup when it is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (constant name, cargo package, wasm file stem)
const COMPONENTS: &[(&str, &str)] = &[
    ("ORDERS", "orders"),
    ("HELLO", "hello"),
    ("FLAKY", "flaky"),
    ("TRAPPER", "trapper"),
    ("WORKER", "worker"),
    ("SPIN_LOOP", "spin_loop"),
    ("MEMORY_BOMB", "memory_bomb"),
    ("DEEP_RECURSION", "deep_recursion"),
    ("HUGE_OUTPUT", "huge_output"),
    ("IMPORTS_SOCKETS", "imports_sockets"),
    ("IMPORTS_FILESYSTEM", "imports_filesystem"),
    ("IMPORTS_UNKNOWN", "imports_unknown"),
    ("LEAK_SECRET", "leak_secret"),
    ("PORT_FLOOD", "port_flood"),
    ("DISK_FILLER", "disk_filler"),
    ("NETWORK_HOG", "network_hog"),
    ("CPU_BURN", "cpu_burn"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().and_then(Path::parent).expect("crates/examples is two levels below the root").to_path_buf();
    let guests = root.join("capabilities");
    rerun_if_changed(&guests);
    rerun_if_changed(&root.join("wit"));

    ensure_target();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target")).join("capabilities");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(guests.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // Nothing of the outer build may leak into the guest build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_PRIMARY_PACKAGE")
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("CARGO_PKG_NAME")
        .output()
        .expect("run cargo to build the capabilities");
    if !output.status.success() {
        panic!(
            "building the capabilities in {} for wasm32-wasip2 failed:\n{}",
            guests.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut code = String::new();
    for (constant, stem) in COMPONENTS {
        let built = target_dir.join("wasm32-wasip2/release").join(format!("{stem}.wasm"));
        let copy = out_dir.join(format!("{stem}.wasm"));
        std::fs::copy(&built, &copy).unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
        code.push_str(&format!(
            "/// The `{stem}` component (wasm32-wasip2), built from `capabilities/`.\npub const {constant}: &[u8] = include_bytes!({:?});\n",
            copy.display().to_string()
        ));
    }
    code.push_str("\n/// Every bundled component by name.\npub fn all() -> &'static [(&'static str, &'static [u8])] {\n    &[\n");
    for (constant, stem) in COMPONENTS {
        code.push_str(&format!("        ({stem:?}, {constant}),\n"));
    }
    code.push_str("    ]\n}\n");
    std::fs::write(out_dir.join("components.rs"), code).expect("write components.rs");
}

fn ensure_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let installed = sysroot.is_some_and(|s| Path::new(&s).join("lib/rustlib/wasm32-wasip2").exists());
    if installed {
        return;
    }
    let status = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status();
    match status {
        Ok(s) if s.success() => {}
        _ => panic!("the wasm32-wasip2 target is missing and `rustup target add wasm32-wasip2` failed; install it and build again"),
    }
}

fn rerun_if_changed(dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rerun_if_changed(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
