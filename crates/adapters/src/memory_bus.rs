//! The in-process broker (the embedded default for messaging).
//!
//! Topics are keyed internally as `<tenant>.<topic>` (the shared-mode subject
//! convention every broker adapter follows); a subscription to a topic receives each
//! tenant's publications tagged with that tenant, so the node runs the handler in the
//! publisher's scope and no delivery crosses tenants. Subscriptions of one group take
//! turns (round robin); each group receives every message.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use runplane_ports::{Delivery, Message, MessageBus, PortError, PortResult, Subscription, TenantId};

use crate::topics::{check_group, check_topic};
use tokio::sync::mpsc;

/// Messages a subscription buffers before publishers wait.
const QUEUE: usize = 1024;
/// How long a publish waits for room before reporting the subscriber unavailable.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// An in-process publish/subscribe bus.
#[derive(Clone, Default)]
pub struct InProcessBus {
    topics: Arc<RwLock<HashMap<String, HashMap<String, Group>>>>,
}

/// The members of one subscription group and whose turn it is.
#[derive(Default)]
struct Group {
    members: Vec<mpsc::Sender<Delivery>>,
    turn: usize,
}

impl InProcessBus {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl MessageBus for InProcessBus {
    async fn publish(&self, tenant: &TenantId, topic: &str, message: Message) -> PortResult<()> {
        check_topic(topic)?;
        // One live member of each group, in turn.
        let senders: Vec<mpsc::Sender<Delivery>> = {
            let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
            let groups = topics.get_mut(topic).map(|g| g.values_mut().collect::<Vec<_>>()).unwrap_or_default();
            groups
                .into_iter()
                .filter_map(|g| {
                    g.members.retain(|s| !s.is_closed());
                    if g.members.is_empty() {
                        return None;
                    }
                    g.turn = (g.turn + 1) % g.members.len();
                    Some(g.members[g.turn].clone())
                })
                .collect()
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

    async fn subscribe(&self, topic: &str, group: &str) -> PortResult<Box<dyn Subscription>> {
        check_topic(topic)?;
        check_group(group)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        let group = topics.entry(topic.to_owned()).or_default().entry(group.to_owned()).or_default();
        group.members.retain(|s| !s.is_closed());
        group.members.push(tx);
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

    /// Nothing persists in process, so there is nothing to acknowledge.
    async fn ack(&mut self) -> PortResult<()> {
        Ok(())
    }
}
