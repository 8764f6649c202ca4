//! The messaging port: publish to topics; subscriptions come from deployment config.

use async_trait::async_trait;

use crate::{PortResult, TenantId};

/// A message's payload and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// A message delivered to a subscription, with the tenant that published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub tenant: TenantId,
    pub topic: String,
    pub message: Message,
}

/// A live subscription to one topic across tenants; each delivery names its tenant so
/// the node runs the handler in that tenant's scope.
///
/// Delivery is at least once on brokers that persist: a delivery that is not
/// acknowledged (the node crashed while handling it) is delivered again.
#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `None` when the bus shut down.
    async fn next(&mut self) -> Option<Delivery>;
    /// Acknowledges the delivery `next` returned last, so it is not delivered again.
    async fn ack(&mut self) -> PortResult<()>;
}

/// A publish/subscribe bus. Adapters keep tenants apart (subject or routing-key prefix
/// in shared mode), so a tenant's publish reaches only deliveries for that tenant.
#[async_trait]
pub trait MessageBus: Send + Sync {
    async fn publish(&self, tenant: &TenantId, topic: &str, message: Message) -> PortResult<()>;
    /// Subscribes to `topic` for every tenant (the node routes each delivery by tenant).
    /// Subscriptions with the same `group` (1-64 of `a-z`, `0-9`, `_`, `-`) share the
    /// work: each message reaches one of them, also across nodes; different groups each
    /// receive every message.
    async fn subscribe(&self, topic: &str, group: &str) -> PortResult<Box<dyn Subscription>>;
}
