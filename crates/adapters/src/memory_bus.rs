//! The in-process broker (the embedded default for messaging).
//!
//! Topics are keyed internally as `<tenant>.<topic>` (the shared-mode subject
//! convention every broker adapter follows); a subscription to a topic receives each
//! tenant's publications tagged with that tenant, so the node runs the handler in the
//! publisher's scope and no delivery crosses tenants. Each subscription group has one
//! queue its members take from (so a busy member never holds back the others); each
//! group receives every message.
//!
//! A publish never waits for a consumer: like a publish to NATS or RabbitMQ it is
//! accepted into the group's backlog (bounded, [`DEFAULT_BACKLOG`] messages unless set
//! with [`InProcessBus::with_backlog`]) and delivered later. A publisher may hold an
//! admission place of the very tenant whose subscriber must run to make room, so
//! waiting for room could deadlock against admission; a full backlog is refused at
//! once with an error that says so. Nothing is persisted: messages still in a backlog
//! are lost when the node stops (use NATS or RabbitMQ for durable delivery).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use runplane_ports::{Delivery, Message, MessageBus, PortError, PortResult, Subscription, TenantId};

use crate::topics::{check_group, check_topic};
use tokio::sync::mpsc;

/// Messages a subscription group holds before publishers are refused.
pub const DEFAULT_BACKLOG: usize = 65_536;

/// An in-process publish/subscribe bus.
#[derive(Clone)]
pub struct InProcessBus {
    topics: Arc<RwLock<HashMap<String, HashMap<String, Group>>>>,
    backlog: usize,
}

/// One subscription group: the queue its members share, and who is a member.
struct Group {
    tx: mpsc::Sender<Delivery>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Delivery>>>,
    /// One clone per live subscription; the group ends when only this one is left.
    members: Arc<()>,
}

impl Group {
    fn is_abandoned(&self) -> bool {
        Arc::strong_count(&self.members) == 1
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::with_backlog(DEFAULT_BACKLOG)
    }
}

impl InProcessBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Backpressure, said plainly: the reason is the capability's own topic, no
    /// infrastructure detail.
    fn backlog_full(&self, topic: &str, group: &str) -> PortError {
        tracing::warn!(target: runplane_ports::LOG_TARGET, topic, group, backlog = self.backlog, "in-process broker: a subscription group's backlog is full; publishes to it are refused");
        PortError::Unavailable(format!(
            "the subscribers of topic {topic} have {} messages waiting, the most this bus holds; retry later",
            self.backlog
        ))
    }

    /// A bus whose groups each hold at most `backlog` undelivered messages (at least 1).
    pub fn with_backlog(backlog: usize) -> Self {
        Self { topics: Arc::default(), backlog: backlog.max(1) }
    }
}

#[async_trait]
impl MessageBus for InProcessBus {
    async fn publish(&self, tenant: &TenantId, topic: &str, message: Message) -> PortResult<()> {
        check_topic(topic)?;
        let senders: Vec<(String, mpsc::Sender<Delivery>)> = {
            let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
            match topics.get_mut(topic) {
                Some(groups) => {
                    // A group whose last subscription went away (undeployed) stops collecting.
                    groups.retain(|_, g| !g.is_abandoned());
                    groups.iter().map(|(name, g)| (name.clone(), g.tx.clone())).collect()
                }
                None => Vec::new(),
            }
        };
        // Room in every group first, so a refused publish reaches none of them.
        if let Some((group, _)) = senders.iter().find(|(_, tx)| tx.capacity() == 0) {
            return Err(self.backlog_full(topic, group));
        }
        for (group, tx) in senders {
            let delivery = Delivery { tenant: tenant.clone(), topic: topic.to_owned(), message: message.clone() };
            // Full only if another publisher took the last place since the check above;
            // closed only if the group just ended. Either way nobody waits.
            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(delivery) {
                return Err(self.backlog_full(topic, &group));
            }
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &str, group: &str) -> PortResult<Box<dyn Subscription>> {
        check_topic(topic)?;
        check_group(group)?;
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        let groups = topics.entry(topic.to_owned()).or_default();
        groups.retain(|_, g| !g.is_abandoned());
        let g = groups.entry(group.to_owned()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(self.backlog);
            Group { tx, rx: Arc::new(tokio::sync::Mutex::new(rx)), members: Arc::new(()) }
        });
        Ok(Box::new(InProcessSubscription { rx: g.rx.clone(), _member: g.members.clone() }))
    }
}

struct InProcessSubscription {
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Delivery>>>,
    _member: Arc<()>,
}

#[async_trait]
impl Subscription for InProcessSubscription {
    async fn next(&mut self) -> Option<Delivery> {
        // Members take turns at the shared queue; whoever waits longest is next.
        self.rx.lock().await.recv().await
    }

    /// Nothing persists in process, so there is nothing to acknowledge.
    async fn ack(&mut self) -> PortResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u8) -> Message {
        Message { payload: vec![n], headers: Vec::new() }
    }

    #[tokio::test]
    async fn a_full_backlog_refuses_at_once_and_a_drained_one_accepts_again() {
        let bus = InProcessBus::with_backlog(2);
        let tenant = TenantId::new("acme").expect("tenant");
        let mut sub = bus.subscribe("order.created", "route-a").await.expect("subscribe");
        bus.publish(&tenant, "order.created", msg(1)).await.expect("room for 1");
        bus.publish(&tenant, "order.created", msg(2)).await.expect("room for 2");
        let started = std::time::Instant::now();
        let refused = bus.publish(&tenant, "order.created", msg(3)).await;
        assert!(started.elapsed() < std::time::Duration::from_millis(100), "a publish never waits for room");
        match refused {
            Err(PortError::Unavailable(m)) => assert!(m.contains("order.created") && m.contains("2 messages waiting"), "{m}"),
            other => panic!("expected a clear refusal, got {other:?}"),
        }
        assert_eq!(sub.next().await.expect("delivery").message.payload, vec![1]);
        bus.publish(&tenant, "order.created", msg(4)).await.expect("room again");
    }

    #[tokio::test]
    async fn members_of_a_group_share_one_queue_and_every_group_gets_every_message() {
        let bus = InProcessBus::new();
        let tenant = TenantId::new("acme").expect("tenant");
        let mut a1 = bus.subscribe("t", "a").await.expect("a1");
        let mut a2 = bus.subscribe("t", "a").await.expect("a2");
        let mut b = bus.subscribe("t", "b").await.expect("b");
        for n in 0..4 {
            bus.publish(&tenant, "t", msg(n)).await.expect("publish");
        }
        // One member takes everything while the other is busy: nothing waits behind it.
        let mut got: Vec<u8> = Vec::new();
        for _ in 0..4 {
            got.extend(a1.next().await.expect("a1").message.payload);
        }
        assert_eq!(got, vec![0, 1, 2, 3]);
        bus.publish(&tenant, "t", msg(9)).await.expect("publish");
        assert_eq!(a2.next().await.expect("a2").message.payload, vec![9]);
        let mut all_b = Vec::new();
        for _ in 0..5 {
            all_b.extend(b.next().await.expect("b").message.payload);
        }
        assert_eq!(all_b, vec![0, 1, 2, 3, 9]);
    }

    #[tokio::test]
    async fn an_undeployed_group_stops_collecting() {
        let bus = InProcessBus::with_backlog(1);
        let tenant = TenantId::new("acme").expect("tenant");
        let sub = bus.subscribe("t", "gone").await.expect("subscribe");
        bus.publish(&tenant, "t", msg(1)).await.expect("publish");
        drop(sub);
        // The group's backlog is full, but nobody is subscribed any more: not a refusal.
        bus.publish(&tenant, "t", msg(2)).await.expect("no group left to fill");
    }
}
