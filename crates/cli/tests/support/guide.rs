//! The README's "Writing a capability" guide, followed literally: its files written as
//! they are shown, its shell steps run as they are shown (with bash), in a fresh
//! directory outside the repository. Two things stand in for its `setup` step, which
//! installs tools: `runplane/` is a link to this checkout, and the `runplane` on `PATH`
//! is the binary under test. The node listens on a free port instead of 8090.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{BIN, Child};

const GUIDE_PORT: &str = "8090";

/// One fenced block of the guide: a file (`# file: NAME` / `// file: NAME` on its first
/// line) or a shell step (`# step: NAME`).
#[derive(Debug)]
enum Block {
    File { name: String, text: String },
    Step { name: String, script: String },
}

/// The blocks of the README section `## Writing a capability`, in order.
fn guide_blocks(readme: &str) -> Vec<Block> {
    let start = readme.find("\n## Writing a capability\n").expect("README has a section `## Writing a capability`");
    let rest = &readme[start + 1..];
    let section = &rest[..rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3)];
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if !line.starts_with("```") || line.len() == 3 {
            continue;
        }
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        let text = body.iter().map(|l| format!("{l}\n")).collect::<String>();
        let first = body.first().copied().unwrap_or_default();
        if let Some(name) = first.strip_prefix("# file: ").or_else(|| first.strip_prefix("// file: ")) {
            blocks.push(Block::File { name: name.trim().to_owned(), text });
        } else if let Some(name) = first.strip_prefix("# step: ") {
            blocks.push(Block::Step { name: name.trim().to_owned(), script: text });
        }
    }
    blocks
}

fn step<'a>(blocks: &'a [Block], wanted: &str) -> &'a str {
    blocks
        .iter()
        .find_map(|b| match b {
            Block::Step { name, script } if name == wanted => Some(script.as_str()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("the guide has no `# step: {wanted}` block"))
}

/// Runs `script` with bash in `dir`, `runplane` (the binary under test) first on PATH.
fn run(script: &str, dir: &Path, port: &str) -> String {
    let bin_dir = Path::new(BIN).parent().expect("the binary's directory");
    let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())))
        .expect("PATH");
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script.replace(GUIDE_PORT, port)])
        .current_dir(dir)
        .env("PATH", path)
        // The guide's paths (target/wasm32-wasip2/release/…) are cargo's defaults.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUNPLANE_NODE")
        .env_remove("RUNPLANE_DATA_DIR")
        .env_remove("RUNPLANE_ADMIN_TOKEN")
        .output()
        .expect("run bash");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "the guide's step failed in {}:\n{script}\nstdout:\n{stdout}\nstderr:\n{stderr}", dir.display());
    stdout
}

#[tokio::test]
async fn the_readme_guide_builds_deploys_and_calls_a_capability_out_of_tree() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository");
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("README.md");
    let blocks = guide_blocks(&readme);

    // What the setup step installs is what stands in for it here.
    let setup = step(&blocks, "setup");
    assert!(setup.contains("cargo install --locked --path runplane/crates/cli"), "{setup}");
    assert!(setup.contains("rustup target add wasm32-wasip2"), "{setup}");

    let work = tempfile::tempdir().expect("a working directory");
    #[cfg(unix)]
    std::os::unix::fs::symlink(&repo, work.path().join("runplane")).expect("link the checkout");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port().to_string();

    run(step(&blocks, "new"), work.path(), &port);
    let crate_dir = work.path().join("greeter");
    assert!(crate_dir.join("wit/ports.wit").is_file() && crate_dir.join("wit/deps").is_dir(), "the WIT is copied with its deps");
    let mut files = 0;
    for b in &blocks {
        if let Block::File { name, text } = b {
            let path = crate_dir.join(name);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&path, text).expect("write the guide's file");
            files += 1;
        }
    }
    assert_eq!(files, 2, "the guide shows Cargo.toml and src/lib.rs");

    run(step(&blocks, "build"), &crate_dir, &port);
    assert!(crate_dir.join("target/wasm32-wasip2/release/greeter.wasm").is_file(), "the component is where the guide says");

    // The node step runs in its own terminal: here, in the background.
    let node = step(&blocks, "node").trim().lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n").replace(GUIDE_PORT, &port);
    let bin_dir = Path::new(BIN).parent().expect("the binary's directory").display().to_string();
    let _node = Child(
        Command::new("bash")
            .args(["-c", &format!("PATH={bin_dir}:$PATH exec {node}")])
            .current_dir(&crate_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the guide's node"),
    );
    let creds = work.path().join("rp-data/demo-credentials.json");
    let started = Instant::now();
    while !creds.exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "the guide's node wrote no credentials within 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    run(step(&blocks, "deploy"), &crate_dir, &port);

    // The call step prints what its `# → ` lines say, in order.
    let call = step(&blocks, "call");
    let expected: Vec<&str> = call.lines().filter_map(|l| l.strip_prefix("# → ")).collect();
    assert_eq!(expected.len(), 2, "{call}");
    let printed = run(call, &crate_dir, &port);
    let got: Vec<&str> = printed.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(got, expected, "the capability answers as the guide says");
}
