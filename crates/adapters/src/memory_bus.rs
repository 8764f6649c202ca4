//! The in-process broker (the embedded default for messaging).
//!
//! Topics are keyed internally as `<tenant>.<topic>` (the shared-mode subject
//! convention every broker adapter follows); a subscription to a topic receives each
//! tenant's publications tagged with that tenant, so the node runs the handler in the
//! publisher's scope and no delivery crosses tenants.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use runplane_ports::{Delivery, Message, MessageBus, PortError, PortResult, Subscription, TenantId, validate_name};
use tokio::sync::mpsc;

/// Messages a subscription buffers before publishers wait.
const QUEUE: usize = 1024;
/// How long a publish waits for room before reporting the subscriber unavailable.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// An in-process publish/subscribe bus.
#[derive(Clone, Default)]
pub struct InProcessBus {
    topics: Arc<RwLock<HashMap<String, Vec<mpsc::Sender<Delivery>>>>>,
}

impl InProcessBus {
    pub fn new() -> Self {
        Self::default()
    }
}

fn check_topic(topic: &str) -> PortResult<()> {
    validate_name("topic", topic, 128)?;
    if topic.contains(['*', '>', ' ']) {
        return Err(PortError::Invalid(format!("topic {topic:?} must not contain '*', '>' or spaces")));
    }
    Ok(())
}

#[async_trait]
impl MessageBus for InProcessBus {
    async fn publish(&self, tenant: &TenantId, topic: &str, message: Message) -> PortResult<()> {
        check_topic(topic)?;
        let senders: Vec<mpsc::Sender<Delivery>> = {
            let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
            topics.get(topic).cloned().unwrap_or_default()
        };
        for tx in senders {
            let delivery = Delivery { tenant: tenant.clone(), topic: topic.to_owned(), message: message.clone() };
            match tx.send_timeout(delivery, SEND_TIMEOUT).await {
                Ok(()) => {}
                // A closed subscription is pruned on the next subscribe; not the publisher's problem.
                Err(mpsc::error::SendTimeoutError::Closed(_)) => {}
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    return Err(PortError::unavailable("in-process broker", format!("the subscribers of {topic} are not keeping up")));
                }
            }
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &str) -> PortResult<Box<dyn Subscription>> {
        check_topic(topic)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        let subs = topics.entry(topic.to_owned()).or_default();
        subs.retain(|s| !s.is_closed());
        subs.push(tx);
        Ok(Box::new(InProcessSubscription { rx }))
    }
}

struct InProcessSubscription {
    rx: mpsc::Receiver<Delivery>,
}

#[async_trait]
impl Subscription for InProcessSubscription {
    async fn next(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }
}
