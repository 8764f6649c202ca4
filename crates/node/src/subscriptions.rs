//! Delivering messages to capabilities' message handlers (spec §3.1): each deployment's
//! subscriptions become one task per topic, running the handler in the publishing
//! tenant's scope.

use std::sync::Arc;

use runplane_audit::{LogId, Outcome, Usage};
use runplane_host::Invocation;
use runplane_ports::{Delivery, TenantId};

use crate::node::{ActiveDeployment, Node};

/// (Re)starts the subscription tasks of a deployment's route.
pub(crate) async fn restart(node: &Arc<Node>, active: &Arc<ActiveDeployment>) {
    let route = active.deployment.route.clone();
    let mut tasks = Vec::new();
    for topic in &active.deployment.subscriptions {
        // The route names the group: every node serving this route shares its messages.
        let group: String = format!("route-{}", route.to_ascii_lowercase().replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"))
            .chars()
            .take(64)
            .collect();
        let mut sub = match node.bindings.bus().subscribe(topic, &group).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%route, %topic, error = %e, "could not subscribe");
                continue;
            }
        };
        let node = node.clone();
        let route = route.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(delivery) = sub.next().await {
                // Each message is handled by the deployment live at that moment.
                let Some(active) = node.deployment(&route) else { break };
                deliver(&node, &active, delivery).await;
                // Handled (or refused and audited): not to be delivered again.
                if let Err(e) = sub.ack().await {
                    tracing::warn!(%route, error = %e, "could not acknowledge a message; it may be delivered again");
                }
            }
        }));
    }
    let mut subs = node.subscriptions.lock().await;
    if let Some(old) = subs.insert(route, tasks) {
        for t in old {
            t.abort();
        }
    }
}

async fn deliver(node: &Arc<Node>, active: &ActiveDeployment, delivery: Delivery) {
    let Some(tenant) = node.tenant(delivery.tenant.as_str()) else { return };
    if tenant.status != "active" || tenant.provisioning != "ready" {
        tracing::info!(tenant = %tenant.id, topic = %delivery.topic, "dropping a message for a suspended or unprovisioned tenant");
        return;
    }
    let Ok(tenant_id) = TenantId::new(&tenant.id) else { return };
    let cap = &active.capability;
    let trace = node.entropy.uuid().simple().to_string();
    let context = Arc::new(crate::api::apps::new_context(node, &tenant_id, "bus", None, trace, &cap.name, &cap.digest));
    let ports = match node.bindings.ports(&tenant.id, tenant.mode).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(tenant = %tenant.id, error = %e, "cannot deliver a message: the tenant's stores are unavailable");
            return;
        }
    };
    let payload_len = delivery.message.payload.len() as u64;
    let (outcome, report) = node
        .host
        .deliver_message(
            cap,
            Invocation { context: context.clone(), ports, allow: active.allow.clone() },
            delivery.topic.clone(),
            delivery.message.payload,
            delivery.message.headers,
        )
        .await;
    let mut event = node.event("bus", Some(&tenant.id), "invoke.message", &active.deployment.route, Outcome::ok(None));
    event.context = Some((*context).clone());
    event.capability_digest = Some(cap.digest.clone());
    event.details.insert("topic".into(), delivery.topic.clone().into());
    event.usage = Some(Usage {
        fuel: report.fuel_consumed,
        memory_peak_bytes: report.memory_peak_bytes as u64,
        port_calls: report.port_calls,
        request_bytes: payload_len,
        response_bytes: 0,
    });
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(msg)) => {
            tracing::warn!(tenant = %tenant.id, topic = %delivery.topic, "message handler refused the message: {msg}");
            event.outcome = Outcome::error("handler_error", None);
        }
        Err(e) => {
            tracing::warn!(tenant = %tenant.id, topic = %delivery.topic, error = %e, "message delivery failed");
            event.outcome = Outcome::error(e.code(), None);
        }
    }
    if let Err(e) = node.append(LogId::tenant(&tenant.id), event).await {
        tracing::error!(error = %e, "could not audit a message delivery");
    }
}
