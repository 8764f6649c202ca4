//! The `runplane` command.

mod admin;
mod control;
mod hints;
mod job;
mod rollout;
mod up;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "runplane", version, about = "Runplane: run WebAssembly capabilities for many tenants on bound infrastructure")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node with embedded defaults, the bundled `orders` example and demo tenants.
    Up {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = "./runplane-data")]
        data_dir: PathBuf,
        /// Serve HTTPS with a development CA generated into <data-dir>/tls (trust
        /// <data-dir>/tls/ca.pem, e.g. `curl --cacert`).
        #[arg(long)]
        tls: bool,
    },
    /// Start a node from a runplane.toml.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the canonical JSON (or with --hash its SHA-256) of one JSON value read on stdin.
    Canon {
        #[arg(long)]
        hash: bool,
    },
    #[command(flatten)]
    Admin(admin::AdminCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Canon { hash } = cli.command {
        return canon(hash);
    }
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up { listen, data_dir, tls } => up::run(listen, data_dir, tls).await,
            Command::Serve { config } => serve(config).await,
            Command::Admin(cmd) => admin::run(cmd).await,
            Command::Canon { .. } => unreachable!("handled above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNPLANE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,wasmtime=warn,cranelift=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn canon(hash: bool) -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("error: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    match runplane_cjson::parse_canonical(&input) {
        Ok(canonical) => {
            if hash {
                println!("{}", runplane_cjson::sha256_hex(canonical.as_bytes()));
            } else {
                println!("{canonical}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn serve(config: PathBuf) -> anyhow::Result<()> {
    let cfg = runplane_node::NodeConfig::load(&config)?;
    let running = runplane_node::Node::start(cfg).await?;
    if running.generated_admin_token.is_some() {
        eprintln!("generated an admin token in {}", running.node.config().data_dir.join("admin-token").display());
    }
    eprintln!("runplane node listening on {}://{}", running.node.scheme(), running.addr);
    if let Some(admin) = running.admin_addr {
        eprintln!("admin API on {}://{admin}", running.node.scheme());
    }
    if let Some(metadata) = running.metadata_addr {
        eprintln!("instance metadata interface on https://{metadata}/v1/instance/metadata (TLS 1.3, client certificate and capability token required)");
    }
    let node = running.node.clone();
    tokio::spawn(reload_tls_on_sighup(node.clone()));
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = node.drain_requested() => eprintln!("an operator asked this node to drain (runplane operate drain-node)"),
    }
    eprintln!("draining: /readyz answers 503; in-flight requests finish, then the node exits");
    if running.drain().await == runplane_node::drain::DrainOutcome::TimedOut {
        eprintln!("some connections were still open past the longest invocation deadline and were closed");
    }
    Ok(())
}

/// On every SIGHUP, reads the TLS certificate files again.
async fn reload_tls_on_sighup(node: std::sync::Arc<runplane_node::Node>) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            match node.reload_tls() {
                Ok(Some(s)) => eprintln!("SIGHUP: serving the TLS certificate {} (valid until {}, sha256 {})", s.subject, s.not_after, s.sha256),
                Ok(None) => eprintln!("SIGHUP: this node serves plain HTTP; there is no certificate to reload"),
                Err(e) => eprintln!("SIGHUP: {e}; the previous certificate keeps serving"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = node;
}

/// Waits for Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
