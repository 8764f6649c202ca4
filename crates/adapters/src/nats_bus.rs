//! NATS JetStream adapter for messaging.
//!
//! One stream (`<PREFIX>`, subjects `<prefix>.>`) holds every tenant's messages as
//! `<prefix>.<tenant>.<topic>` (see [`crate::topics`]); publishing waits for the
//! JetStream acknowledgement, so a published message is stored. A subscription is a
//! durable pull consumer named after its group and filtered to `<prefix>.*.<topic>`:
//! several nodes in one group share the work, and a message not acknowledged is
//! delivered again. The client reconnects by itself; while the server is away, calls
//! fail with `unavailable` after the configured timeout.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use futures::StreamExt;
use runplane_ports::{Delivery, Message, MessageBus, PortError, PortResult, Subscription, TenantId};
use tokio::sync::OnceCell;

use crate::topics::{HEADERS_KEY, check_group, check_topic, decode_headers, decode_topic, encode_headers, encode_topic, split_subject};

const BACKEND: &str = "nats";
/// Messages a subscription pulls from the server at a time.
const PULL_BATCH: usize = 16;

/// Where the NATS server is and how the stream is bounded.
#[derive(Clone)]
pub struct NatsSettings {
    pub url: String,
    /// Subject prefix and (upper-cased) stream name: 1-32 of `a-z`, `0-9`, `_`.
    pub prefix: String,
    /// Upper bound on a publish acknowledgement or a consumer set-up.
    pub timeout: Duration,
    /// Retention: messages older than this are dropped.
    pub max_age: Duration,
    /// Retention: the stream never holds more bytes than this.
    pub max_bytes: i64,
}

impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL can hold a user and password.
        f.debug_struct("NatsSettings").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// A message bus on NATS JetStream.
pub struct NatsBus {
    settings: NatsSettings,
    js: jetstream::Context,
    stream: OnceCell<stream::Stream>,
}

fn err(what: &str, e: impl std::fmt::Display) -> PortError {
    PortError::unavailable(BACKEND, format_args!("{what}: {e}"))
}

impl NatsBus {
    /// Connects in the background (the node starts while NATS is down).
    pub async fn connect(settings: NatsSettings) -> PortResult<Self> {
        crate::topics::check_prefix("NATS", &settings.prefix)?;
        let client = async_nats::ConnectOptions::new()
            .name("runplane")
            .connection_timeout(settings.timeout)
            .request_timeout(Some(settings.timeout))
            .retry_on_initial_connect()
            .connect(settings.url.as_str())
            .await
            .map_err(|e| PortError::unavailable(BACKEND, format_args!("cannot connect ({})", e.kind())))?;
        let js = jetstream::new(client);
        Ok(NatsBus { settings, js, stream: OnceCell::new() })
    }

    /// The stream, created on first use (and retried until the server answers).
    async fn stream(&self) -> PortResult<&stream::Stream> {
        self.stream
            .get_or_try_init(|| async {
                let config = stream::Config {
                    name: self.settings.prefix.to_ascii_uppercase(),
                    subjects: vec![format!("{}.>", self.settings.prefix)],
                    max_age: self.settings.max_age,
                    max_bytes: self.settings.max_bytes,
                    storage: stream::StorageType::File,
                    ..Default::default()
                };
                tokio::time::timeout(self.settings.timeout, self.js.get_or_create_stream(config))
                    .await
                    .map_err(|_| PortError::unavailable(BACKEND, "the server did not answer in time"))?
                    .map_err(|e| {
                        // JetStream reserves max_bytes from its storage for every stream.
                        let text = e.to_string();
                        if text.contains("insufficient resources") {
                            err(
                                "cannot create the stream: JetStream has no storage left to reserve its max_bytes (every stream reserves its own); give the backend a smaller max_bytes or the server more max_file_store",
                                text,
                            )
                        } else {
                            err("cannot create the stream", text)
                        }
                    })
            })
            .await
    }

    /// Checks the server answers and the stream exists.
    pub async fn health(&self) -> PortResult<()> {
        self.stream().await.map(|_| ())
    }
}

#[async_trait]
impl MessageBus for NatsBus {
    async fn publish(&self, tenant: &TenantId, topic: &str, message: Message) -> PortResult<()> {
        check_topic(topic)?;
        self.stream().await?;
        let subject = format!("{}.{}.{}", self.settings.prefix, tenant.as_str(), encode_topic(topic));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(HEADERS_KEY, encode_headers(&message.headers).as_str());
        let ack = tokio::time::timeout(self.settings.timeout, async {
            self.js
                .publish_with_headers(subject, headers, message.payload.into())
                .await
                .map_err(|e| err("publish failed", e))?
                .await
                .map_err(|e| err("the server did not acknowledge the message", e))
        })
        .await
        .map_err(|_| PortError::unavailable(BACKEND, "the publish was not acknowledged in time"))?;
        ack.map(|_| ())
    }

    async fn subscribe(&self, topic: &str, group: &str) -> PortResult<Box<dyn Subscription>> {
        check_topic(topic)?;
        check_group(group)?;
        let stream = self.stream().await?;
        // Durable names allow no '.'; the group and a digest of the topic identify it.
        let topic_digest = &crate::topics::digest(topic)[..16];
        let durable = format!("{group}_{topic_digest}");
        let config = consumer::pull::Config {
            durable_name: Some(durable.clone()),
            filter_subject: format!("{}.*.{}", self.settings.prefix, encode_topic(topic)),
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy: consumer::DeliverPolicy::New,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        };
        let consumer = tokio::time::timeout(self.settings.timeout, stream.get_or_create_consumer(&durable, config))
            .await
            .map_err(|_| PortError::unavailable(BACKEND, "the server did not answer in time"))?
            .map_err(|e| err("cannot create the consumer", e))?;
        // Small batches: several members of a group pull from one consumer, and a
        // message waiting in one member's batch must not outlast `ack_wait`.
        let messages = consumer.stream().max_messages_per_batch(PULL_BATCH).messages().await.map_err(|e| err("cannot start consuming", e))?;
        Ok(Box::new(NatsSubscription { prefix: self.settings.prefix.clone(), messages, pending: None }))
    }
}

struct NatsSubscription {
    prefix: String,
    messages: consumer::pull::Stream,
    pending: Option<jetstream::Message>,
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            let msg = match self.messages.next().await? {
                Ok(m) => m,
                Err(e) => {
                    // The server went away; the client reconnects and the stream resumes.
                    tracing::warn!(error = %e, "NATS consumer interrupted; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let parsed = split_subject(&self.prefix, msg.subject.as_str())
                .and_then(|(tenant, token)| Some((TenantId::new(tenant).ok()?, decode_topic(token)?)));
            let Some((tenant, topic)) = parsed else {
                tracing::warn!(subject = %msg.subject, "dropping a message whose subject is not <prefix>.<tenant>.<topic>");
                let _ = msg.ack().await;
                continue;
            };
            let headers = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(HEADERS_KEY))
                .map(|v| decode_headers(v.as_str()))
                .unwrap_or_default();
            let delivery = Delivery { tenant, topic, message: Message { payload: msg.payload.to_vec(), headers } };
            self.pending = Some(msg);
            return Some(delivery);
        }
    }

    async fn ack(&mut self) -> PortResult<()> {
        match self.pending.take() {
            Some(msg) => msg.ack().await.map_err(|e| err("acknowledging failed", e)),
            None => Ok(()),
        }
    }
}
