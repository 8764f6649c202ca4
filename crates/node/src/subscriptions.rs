//! Delivering messages to capabilities' message handlers (spec §3.1): each deployment's
//! subscriptions become one task per topic and messaging backend (the instance's and
//! every tenant's own), running the handler in the publishing tenant's scope. A message
//! is handled only when it came from the bus its tenant is bound to, so a tenant on a
//! broker of its own is never reached through the shared one.

use std::sync::Arc;
use std::time::Duration;

use runplane_audit::{LogId, Outcome};
use runplane_host::{Invocation, Journal};
use runplane_ports::{Delivery, Subscription, TenantId};

use crate::node::{ActiveDeployment, Node};
use crate::replay::{Input, JournalRecord, complete_message_event};

/// Longest pause between attempts to subscribe on a bus that is away.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);
/// Messages of one topic and backend a route handles at once. Each takes its tenant's
/// admission like a request, so a lone listener would fall behind publishers that
/// outnumber it in the tenant's queue.
const DELIVERY_CONCURRENCY: usize = 8;

/// (Re)starts the subscription tasks of a deployment's route.
pub(crate) async fn restart(node: &Arc<Node>, active: &Arc<ActiveDeployment>) {
    let route = active.deployment.route.clone();
    // The route names the group: every node serving this route shares its messages.
    let group: String = format!("route-{}", route.to_ascii_lowercase().replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"))
        .chars()
        .take(64)
        .collect();
    let mut tasks = Vec::new();
    for topic in &active.deployment.subscriptions {
        for backend in node.bindings.messaging_backends() {
            // Members of one group share the topic's messages, DELIVERY_CONCURRENCY at
            // a time. Subscribed before the deployment is acknowledged, so a message
            // published right after it is delivered; a bus that is away is retried in the task.
            for _ in 0..DELIVERY_CONCURRENCY {
                let first = subscribe(node, &backend, topic, &group).await;
                tasks.push(tokio::spawn(listen(node.clone(), route.clone(), backend.clone(), topic.clone(), group.clone(), first)));
            }
        }
    }
    let mut subs = node.subscriptions.lock().await;
    if let Some(old) = subs.insert(route, tasks) {
        for t in old {
            t.abort();
        }
    }
}

async fn subscribe(node: &Node, backend: &str, topic: &str, group: &str) -> Result<Box<dyn Subscription>, String> {
    let bus = node.bindings.bus_named(backend).await.map_err(|e| e.message)?;
    bus.subscribe(topic, group).await.map_err(|e| e.to_string())
}

/// Delivers one topic's messages from one messaging backend, acknowledging each after
/// it was handled (or refused and audited): at least once.
async fn listen(
    node: Arc<Node>,
    route: String,
    backend: String,
    topic: String,
    group: String,
    first: Result<Box<dyn Subscription>, String>,
) {
    let mut sub = match first {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%route, %topic, messaging_backend = %backend, error = %e, "could not subscribe; retrying until the backend answers");
            let mut pause = Duration::from_secs(1);
            loop {
                tokio::time::sleep(pause).await;
                match subscribe(&node, &backend, &topic, &group).await {
                    Ok(s) => {
                        tracing::info!(%route, %topic, messaging_backend = %backend, "subscribed after retrying");
                        break s;
                    }
                    Err(e) => {
                        tracing::warn!(%route, %topic, messaging_backend = %backend, error = %e, "still cannot subscribe");
                        pause = (pause * 2).min(MAX_RETRY_PAUSE);
                    }
                }
            }
        }
    };
    while let Some(delivery) = sub.next().await {
        // Each message is handled by the deployment live at that moment.
        let Some(mut active) = node.deployment(&route) else { break };
        // A paused route holds its messages (unacknowledged) until it is resumed.
        while node.controlplane.is_paused(&route) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match node.deployment(&route) {
                Some(a) => active = a,
                None => return,
            }
        }
        deliver(&node, &active, &backend, delivery).await;
        // Handled (or refused and audited): not to be delivered again.
        if let Err(e) = sub.ack().await {
            tracing::warn!(%route, messaging_backend = %backend, error = %e, "could not acknowledge a message; it may be delivered again");
        }
    }
}

async fn deliver(node: &Arc<Node>, stable: &Arc<ActiveDeployment>, backend: &str, delivery: Delivery) {
    let bound = node.bindings.messaging_backend_of(delivery.tenant.as_str());
    if bound != backend {
        tracing::warn!(
            tenant = %delivery.tenant.as_str(),
            topic = %delivery.topic,
            messaging_backend = %backend,
            bound_to = %bound,
            "dropping a message for a tenant bound to another messaging backend"
        );
        return;
    }
    let Some(tenant) = node.tenant(delivery.tenant.as_str()) else { return };
    if tenant.status != "active" || tenant.provisioning != "ready" {
        tracing::info!(tenant = %tenant.id, topic = %delivery.topic, "dropping a message for a suspended or unprovisioned tenant");
        return;
    }
    // A rollout in progress picks the version by the same cohort rule as requests (a
    // candidate without a message handler leaves messages to stable).
    let mut serving = node.serving(&stable.deployment.route, stable.clone(), &tenant.id, None);
    if !serving.deployment.capability.exports.message_handler {
        serving = crate::rollouts::Serving { deployment: stable.clone(), counted: None };
    }
    let active = &*serving.deployment.clone();
    let started = std::time::Instant::now();
    // Entitlement and the route's flag apply to messages as to requests: a refused
    // delivery is audited in the tenant's log and not handled.
    if let Err(e) = crate::api::apps::check_request(node, &tenant, &active.deployment.route, &active.deployment) {
        let mut ev = node.event("bus", Some(&tenant.id), "invoke.message", &active.deployment.route, Outcome::denied(&e.code, Some(e.status.as_u16())));
        ev.details.insert("topic".into(), delivery.topic.clone().into());
        ev.details.insert("message".into(), e.message.clone().into());
        let _ = node.append(runplane_audit::LogId::tenant(&tenant.id), ev).await;
        return;
    }
    let Ok(tenant_id) = TenantId::new(&tenant.id) else { return };
    let cap = &active.capability;
    let trace = node.entropy.uuid().simple().to_string();
    let context = Arc::new(crate::api::apps::new_context(node, &tenant_id, "bus", None, trace, &cap.name, &cap.digest));
    let mut ports = match node.bindings.ports(&tenant.id, tenant.mode).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(tenant = %tenant.id, error = %e, "cannot deliver a message: the tenant's stores are unavailable");
            return;
        }
    };
    // Configuration frozen for this delivery; its version goes in the audit event.
    ports.config = node.config_sets.snapshot();
    let config_version = ports.config.version();
    // A message waits for its tenant's turn like any invocation; a refusal (quota or
    // full queue, already audited) holds the subscription back rather than losing it.
    let (admitted, _pass) = loop {
        match crate::api::apps::admit(node, &tenant).await {
            Ok(a) => break a,
            Err(e) => {
                let pause = e.headers.iter().find(|(k, _)| *k == "retry-after").and_then(|(_, v)| v.parse().ok()).unwrap_or(1u64);
                tokio::time::sleep(Duration::from_secs(pause.min(5))).await;
            }
        }
    };
    let ports = if node.config.scheduler.enabled {
        crate::quotas::meter_ports(&node.quotas, node.quotas.tenant(&tenant.id, crate::quotas::tier_of(&tenant), node.now_secs()), ports)
    } else {
        ports
    };
    let payload_len = delivery.message.payload.len() as u64;
    let input = Input::Message {
        topic: delivery.topic.clone(),
        payload: Input::base64(&delivery.message.payload),
        headers: delivery.message.headers.clone(),
    };
    let journal = Journal::record();
    let (outcome, report) = node
        .host
        .deliver_message(
            cap,
            Invocation { context: context.clone(), ports, allow: active.allow.clone(), journal: journal.clone(), limits: admitted.limits.clone() },
            delivery.topic.clone(),
            delivery.message.payload,
            delivery.message.headers,
        )
        .await;
    admitted.settle(report.fuel_consumed);
    serving.record(
        match &outcome {
            Ok(Ok(())) => crate::rollouts::Ended::Answered(200),
            Ok(Err(_)) => crate::rollouts::Ended::Answered(500),
            Err(e) => crate::rollouts::Ended::of(e),
        },
        started.elapsed(),
    );
    let mut event = node.event("bus", Some(&tenant.id), "invoke.message", &active.deployment.route, Outcome::ok(None));
    event.config_version = Some(config_version);
    event.context = Some((*context).clone());
    event.capability_digest = Some(cap.digest.clone());
    event.details.insert("topic".into(), delivery.topic.clone().into());
    complete_message_event(&mut event, &outcome, &report, payload_len);
    match &outcome {
        Ok(Ok(())) => {}
        Ok(Err(msg)) => tracing::warn!(tenant = %tenant.id, topic = %delivery.topic, "message handler refused the message: {msg}"),
        Err(e) => tracing::warn!(tenant = %tenant.id, topic = %delivery.topic, error = %e, "message delivery failed"),
    }
    let record = JournalRecord {
        route: active.deployment.route.clone(),
        input,
        allow_hosts: active.allow.entries().to_vec(),
        observations: journal.observations(),
    };
    let appended = match record.encode() {
        Ok((json, digest)) => {
            event.details.insert("journal_digest".into(), digest.into());
            node.audit.append_with_journal(LogId::tenant(&tenant.id), &event, &context.invocation_id, &json, node.now_secs()).await.map_err(|e| e.to_string())
        }
        Err(e) => Err(e.message),
    };
    if let Err(e) = appended {
        node.metrics.audit_failures.inc();
        tracing::error!(error = %e, "could not audit a message delivery");
    }
}
