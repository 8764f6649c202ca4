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
#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `None` when the bus shut down.
    async fn next(&mut self) -> Option<Delivery>;
}

/// A publish/subscribe bus. Adapters keep tenants apart (subject or routing-key prefix
/// in shared mode), so a tenant's publish reaches only deliveries for that tenant.
#[async_trait]
pub trait MessageBus: Send + Sync {
    async fn publish(&self, tenant: &TenantId, topic: &str, message: Message) -> PortResult<()>;
    /// Subscribes to `topic` for every tenant (the node routes each delivery by tenant).
    async fn subscribe(&self, topic: &str) -> PortResult<Box<dyn Subscription>>;
}
