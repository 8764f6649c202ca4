//! `runplane rollout …` and `runplane undo ROUTE`: progressive delivery from the
//! command line (the node's `/v1/rollouts`).

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::admin::{Client, print, seg};

#[derive(Subcommand)]
pub enum RolloutCmd {
    /// Start rolling ROUTE out to CAPABILITY (`name@version`, pushed before).
    Start {
        route: String,
        capability: String,
        /// `canary`, `blue-green`, `rolling` or `all-at-once`.
        #[arg(long, default_value = "canary")]
        strategy: String,
        /// A canary step (repeatable, in order): `weight=PERCENT`, `pause=SECONDS`,
        /// `pause` (until promoted), `cohort=TENANT,TENANT`, `analysis` (the default
        /// checks once). Without any: 10 %, a minute, 50 %, a minute.
        #[arg(long = "step")]
        steps: Vec<String>,
        /// The background analysis as JSON (default: error and trap rates against stable).
        #[arg(long)]
        analysis: Option<String>,
        /// `tenant` (default) or `session` (the tenant and its x-runplane-session).
        #[arg(long, default_value = "tenant")]
        stickiness: String,
        /// A tenant on the candidate from the start (repeatable; blue-green: the preview).
        #[arg(long)]
        include: Vec<String>,
        /// A tenant kept on stable until promotion (repeatable).
        #[arg(long)]
        exclude: Vec<String>,
        /// Blue-green: seconds after the switch in which a failed analysis switches back.
        #[arg(long)]
        post_promotion_secs: Option<u64>,
        /// Rolling: nodes per wave (default 1).
        #[arg(long)]
        max_unavailable: Option<u32>,
        /// Rolling: seconds each wave serves before the next (default 30).
        #[arg(long)]
        wave_secs: Option<u64>,
        /// Rolling: a region whose nodes go first (repeatable, in order).
        #[arg(long = "region")]
        region_order: Vec<String>,
    },
    /// A rollout by id, or the newest of `--route`; `--watch` follows it live.
    Status {
        id: Option<String>,
        #[arg(long)]
        route: Option<String>,
        #[arg(long)]
        watch: bool,
    },
    /// The next step now (`--full`: everyone on the candidate now); a blue-green preview switches.
    Promote {
        id: String,
        #[arg(long)]
        full: bool,
        /// Only if the rollout is still at this revision.
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Everyone back on stable at once.
    Abort {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        revision: Option<u64>,
    },
    /// An aborted rollout from its first step again.
    Retry {
        id: String,
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Hold it where it is.
    Pause {
        id: String,
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Let a paused rollout go on.
    Resume {
        id: String,
        #[arg(long)]
        revision: Option<u64>,
    },
}

/// `weight=20`, `pause=60`, `pause`, `cohort=a,b`, `analysis` as a step object.
pub fn step(s: &str) -> anyhow::Result<Value> {
    let (kind, value) = s.split_once('=').map_or((s, None), |(k, v)| (k, Some(v)));
    Ok(match (kind, value) {
        ("weight", Some(v)) => json!({"set_weight": v.trim_end_matches('%').parse::<f64>().with_context(|| format!("--step {s}: the weight is a percentage, like weight=20"))?}),
        ("pause", None) => json!({"pause": {}}),
        ("pause", Some(v)) => json!({"pause": {"seconds": v.trim_end_matches('s').parse::<u64>().with_context(|| format!("--step {s}: the pause is whole seconds, like pause=60"))?}}),
        ("cohort", Some(v)) => json!({"set_cohort": {"tenants": v.split(',').map(str::trim).filter(|t| !t.is_empty()).collect::<Vec<_>>()}}),
        ("analysis", None) => json!({"analysis": {}}),
        _ => bail!("--step {s} is not a step; write weight=PERCENT, pause=SECONDS, pause, cohort=TENANT,TENANT or analysis"),
    })
}

fn with_revision(path: String, revision: Option<u64>) -> String {
    match revision {
        Some(r) => format!("{path}?revision={r}"),
        None => path,
    }
}

pub async fn run(c: &Client, cmd: RolloutCmd) -> anyhow::Result<()> {
    let op = |id: &str, what: &str| format!("/v1/rollouts/{}/{what}", seg(id));
    let v = match cmd {
        RolloutCmd::Start { route, capability, strategy, steps, analysis, stickiness, include, exclude, post_promotion_secs, max_unavailable, wave_secs, region_order } => {
            let steps = steps.iter().map(|s| step(s)).collect::<anyhow::Result<Vec<_>>>()?;
            let analysis = analysis.map(|a| serde_json::from_str::<Value>(&a).context("--analysis is not JSON")).transpose()?;
            let mut body = json!({"route": route, "capability": capability, "strategy": strategy, "steps": steps, "stickiness": stickiness, "include": include, "exclude": exclude});
            if let Some(a) = analysis {
                body["analysis"] = a;
            }
            if let Some(s) = post_promotion_secs {
                body["post_promotion_secs"] = s.into();
            }
            if let Some(m) = max_unavailable {
                body["max_unavailable"] = m.into();
            }
            if let Some(w) = wave_secs {
                body["wave_secs"] = w.into();
            }
            if !region_order.is_empty() {
                body["region_order"] = region_order.into();
            }
            c.call(Method::POST, "/v1/rollouts", Some(body)).await?
        }
        RolloutCmd::Status { id, route, watch } => {
            let id = match (id, route) {
                (Some(id), _) => id,
                (None, Some(route)) => {
                    let list = c.call(Method::GET, &format!("/v1/rollouts?route={}&limit=1", seg(&route)), None).await?;
                    list["items"][0]["rollout_id"].as_str().map(str::to_owned).with_context(|| format!("route {route} has no rollout"))?
                }
                (None, None) => bail!("name a rollout id, or --route ROUTE for its newest"),
            };
            if watch {
                return follow(c, &id).await;
            }
            c.call(Method::GET, &format!("/v1/rollouts/{}", seg(&id)), None).await?
        }
        RolloutCmd::Promote { id, full, revision } => {
            let path = with_revision(op(&id, "promote"), revision);
            let path = if full { format!("{path}{}full=true", if path.contains('?') { '&' } else { '?' }) } else { path };
            c.call(Method::POST, &path, None).await?
        }
        RolloutCmd::Abort { id, reason, revision } => {
            let mut path = with_revision(op(&id, "abort"), revision);
            if let Some(r) = reason {
                path = format!("{path}{}reason={}", if path.contains('?') { '&' } else { '?' }, url::form_urlencoded::byte_serialize(r.as_bytes()).collect::<String>());
            }
            c.call(Method::POST, &path, None).await?
        }
        RolloutCmd::Retry { id, revision } => c.call(Method::POST, &with_revision(op(&id, "retry"), revision), None).await?,
        RolloutCmd::Pause { id, revision } => c.call(Method::POST, &with_revision(op(&id, "pause"), revision), None).await?,
        RolloutCmd::Resume { id, revision } => c.call(Method::POST, &with_revision(op(&id, "resume"), revision), None).await?,
    };
    print(&v);
    Ok(())
}

/// `runplane undo ROUTE`.
pub async fn undo(c: &Client, route: &str) -> anyhow::Result<()> {
    print(&c.call(Method::POST, &format!("/v1/deployments/{}/undo", seg(route)), None).await?);
    Ok(())
}

/// One line of what a rollout is doing.
pub fn describe(r: &Value) -> String {
    let weight = r["weight"].as_f64().unwrap_or(0.0);
    let steps = r["steps"].as_array().map_or(0, Vec::len);
    let mut line = format!(
        "{} {} → {}: {} at step {}/{steps}, {weight} % on the candidate",
        r["route"].as_str().unwrap_or("?"),
        label(&r["stable"]),
        label(&r["candidate"]),
        r["phase"].as_str().unwrap_or("?"),
        r["step"].as_u64().unwrap_or(0),
    );
    if let Some(by) = r["paused_by"].as_str() {
        line.push_str(&format!(" (paused: {by})"));
    }
    line
}

fn label(v: &Value) -> String {
    format!("{}@{}", v["capability"].as_str().unwrap_or("?"), v["version"].as_str().unwrap_or("?"))
}

/// Follows a rollout until it stops: in a terminal a bar for the weight and each
/// decision as it comes; piped, the decisions and each change of state as lines.
async fn follow(c: &Client, id: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(10_000);
        bar.set_style(indicatif::ProgressStyle::with_template("{bar:40} {msg}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
        bar
    });
    let (mut seen, mut last) = (0u64, String::new());
    loop {
        let r = c.call(Method::GET, &format!("/v1/rollouts/{}", seg(id)), None).await?;
        for d in r["history"].as_array().into_iter().flatten() {
            let revision = d["revision"].as_u64().unwrap_or(0);
            if revision > seen {
                seen = revision;
                let line = format!("[{}] {}", d["action"].as_str().unwrap_or("?"), d["message"].as_str().unwrap_or(""));
                match &bar {
                    Some(b) => b.println(line),
                    None => println!("{line}"),
                }
            }
        }
        let now = describe(&r);
        match &bar {
            Some(b) => {
                b.set_position((r["weight"].as_f64().unwrap_or(0.0) * 100.0) as u64);
                b.set_message(now.clone());
            }
            None if now != last => println!("{now}"),
            None => {}
        }
        last = now;
        if !matches!(r["phase"].as_str(), Some("progressing" | "paused")) {
            if let Some(b) = bar {
                b.finish();
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_written_as_the_api_reads_them() {
        assert_eq!(step("weight=20").expect("step"), json!({"set_weight": 20.0}));
        assert_eq!(step("weight=0.5%").expect("step"), json!({"set_weight": 0.5}));
        assert_eq!(step("pause=60").expect("step"), json!({"pause": {"seconds": 60}}));
        assert_eq!(step("pause").expect("step"), json!({"pause": {}}));
        assert_eq!(step("cohort=acme, globex").expect("step"), json!({"set_cohort": {"tenants": ["acme", "globex"]}}));
        assert!(step("jump=3").is_err());
        assert!(step("weight=lots").is_err());
    }
}
