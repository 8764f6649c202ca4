//! `runplane job …`: jobs from the command line (the node's `/v1/jobs`). `--token` is a
//! tenant's API key (its own jobs) or an admin credential with `--tenant`.

use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::admin::{Client, print, seg};

#[derive(Subcommand)]
pub enum JobCmd {
    /// Submit a job: ROUTE's task with INPUT (JSON, default {}); `--wait` follows it to its end.
    Submit {
        route: String,
        input: Option<String>,
        /// The same key twice gives the same job.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// The retry policy as JSON (`{"maximum_attempts": 5, ...}`).
        #[arg(long)]
        retry: Option<String>,
        /// A pool of the node's [jobs.pools].
        #[arg(long)]
        pool: Option<String>,
        /// With an admin credential: the tenant the job runs for.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        wait: bool,
    },
    /// The jobs of the credential's tenant (or `--tenant`'s), newest first.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// One job.
    Show { id: String },
    /// A job's attempts, each with its status and error.
    Attempts { id: String },
    /// Cancel a queued or running job.
    Cancel {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

pub async fn run(c: &Client, cmd: JobCmd) -> anyhow::Result<()> {
    let v = match cmd {
        JobCmd::Submit { route, input, idempotency_key, retry, pool, tenant, wait } => {
            let input: Value = input.map(|i| serde_json::from_str(&i).context("INPUT is not JSON")).transpose()?.unwrap_or_else(|| json!({}));
            let mut body = json!({"route": route, "input": input});
            if let Some(r) = retry {
                body["retry"] = serde_json::from_str(&r).context("--retry is not JSON")?;
            }
            for (k, v) in [("idempotency_key", idempotency_key), ("pool", pool), ("tenant", tenant)] {
                if let Some(v) = v {
                    body[k] = v.into();
                }
            }
            let job = c.call(Method::POST, "/v1/jobs", Some(body)).await?;
            if !wait {
                job
            } else {
                follow(c, job["job_id"].as_str().unwrap_or_default()).await?
            }
        }
        JobCmd::List { tenant } => {
            let path = match tenant {
                Some(t) => format!("/v1/jobs?tenant={}", seg(&t)),
                None => "/v1/jobs".into(),
            };
            c.call(Method::GET, &path, None).await?
        }
        JobCmd::Show { id } => c.call(Method::GET, &format!("/v1/jobs/{}", seg(&id)), None).await?,
        JobCmd::Attempts { id } => c.call(Method::GET, &format!("/v1/jobs/{}/attempts", seg(&id)), None).await?,
        JobCmd::Cancel { id, reason } => {
            let path = match reason {
                Some(r) => format!("/v1/jobs/{}/cancel?reason={}", seg(&id), seg(&r)),
                None => format!("/v1/jobs/{}/cancel", seg(&id)),
            };
            c.call(Method::POST, &path, None).await?
        }
    };
    print(&v);
    Ok(())
}

/// One line for where a job is.
fn describe(j: &Value) -> String {
    let mut line = format!("{} {} after {} attempt(s)", j["job_id"].as_str().unwrap_or("?"), j["status"].as_str().unwrap_or("?"), j["attempts"].as_u64().unwrap_or(0));
    if let Some(at) = j["next_attempt_at_utc"].as_str().filter(|_| j["attempts"].as_u64().unwrap_or(0) > 0) {
        line.push_str(&format!("; next attempt at {at}"));
    }
    if let Some(r) = j["reason"].as_str() {
        line.push_str(&format!(": {r}"));
    }
    line
}

/// Follows a job to its end: in a terminal a spinner with its state, piped each change
/// as a line. The job as it ended.
async fn follow(c: &Client, id: &str) -> anyhow::Result<Value> {
    use std::io::IsTerminal as _;
    let spinner = std::io::stderr().is_terminal().then(indicatif::ProgressBar::new_spinner);
    let mut last = String::new();
    loop {
        let j = c.call(Method::GET, &format!("/v1/jobs/{}", seg(id)), None).await?;
        let now = describe(&j);
        match &spinner {
            Some(s) => {
                s.set_message(now.clone());
                s.tick();
            }
            None if now != last => eprintln!("{now}"),
            None => {}
        }
        last = now;
        if matches!(j["status"].as_str(), Some("passed" | "failed" | "cancelled")) {
            if let Some(s) = spinner {
                s.finish_with_message(last);
            }
            return Ok(j);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
