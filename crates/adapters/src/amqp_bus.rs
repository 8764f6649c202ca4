//! RabbitMQ (AMQP 0-9-1) adapter for messaging.
//!
//! One durable topic exchange (`<prefix>`) carries every tenant's messages with routing
//! key `<tenant>.<topic>` (see [`crate::topics`]); publishing waits for the broker's
//! publisher confirm and marks messages persistent. A subscription is a durable queue
//! `<prefix>.<group>.<digest of topic>` bound with `*.<topic>`: consumers of one group
//! share it (also across nodes) and an unacknowledged delivery is delivered again.
//! A broken connection is dropped and made again on the next call.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use runplane_ports::{Delivery, Message, MessageBus, PortError, PortResult, Subscription, TenantId};
use tokio::sync::Mutex;

use crate::topics::{HEADERS_KEY, check_group, check_topic, decode_headers, decode_topic, encode_headers, encode_topic};

const BACKEND: &str = "rabbitmq";

/// Where the broker is.
#[derive(Clone)]
pub struct AmqpSettings {
    pub url: String,
    /// Exchange name and queue prefix: 1-32 of `a-z`, `0-9`, `_`.
    pub prefix: String,
    /// Upper bound on connecting and on a publisher confirm.
    pub timeout: Duration,
}

impl std::fmt::Debug for AmqpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSettings").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn err(what: &str, e: impl std::fmt::Display) -> PortError {
    PortError::unavailable(BACKEND, format_args!("{what}: {e}"))
}

/// A channel with publisher confirms on a connection of its own, with the exchange declared.
async fn open(settings: &AmqpSettings) -> PortResult<(Connection, Channel)> {
    let connect = async {
        let conn = Connection::connect(&settings.url, ConnectionProperties::default())
            .await
            .map_err(|e| err("cannot connect", e))?;
        let channel = conn.create_channel().await.map_err(|e| err("cannot open a channel", e))?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| err("cannot enable confirms", e))?;
        channel
            .exchange_declare(
                ShortString::from(settings.prefix.as_str()),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .map_err(|e| err("cannot declare the exchange", e))?;
        Ok((conn, channel))
    };
    tokio::time::timeout(settings.timeout, connect)
        .await
        .map_err(|_| PortError::unavailable(BACKEND, "connecting to the broker timed out"))?
}

/// A message bus on RabbitMQ.
pub struct AmqpBus {
    settings: AmqpSettings,
    publisher: Mutex<Option<(Connection, Channel)>>,
}

impl AmqpBus {
    /// Checks the settings; the connection is made on first use.
    pub fn new(settings: AmqpSettings) -> PortResult<Self> {
        crate::topics::check_prefix("RabbitMQ", &settings.prefix)?;
        Ok(AmqpBus { settings, publisher: Mutex::new(None) })
    }

    /// Checks the broker answers.
    pub async fn health(&self) -> PortResult<()> {
        self.channel().await.map(|_| ())
    }

    async fn channel(&self) -> PortResult<Channel> {
        let mut slot = self.publisher.lock().await;
        if let Some((conn, ch)) = slot.as_ref()
            && conn.status().connected()
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        let (conn, ch) = open(&self.settings).await?;
        *slot = Some((conn, ch.clone()));
        Ok(ch)
    }
}

#[async_trait]
impl MessageBus for AmqpBus {
    async fn publish(&self, tenant: &TenantId, topic: &str, message: Message) -> PortResult<()> {
        check_topic(topic)?;
        let routing_key = format!("{}.{}", tenant.as_str(), encode_topic(topic));
        if routing_key.len() > 255 {
            return Err(PortError::Invalid(format!("topic {topic:?} is too long for a RabbitMQ routing key")));
        }
        let channel = self.channel().await?;
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from(HEADERS_KEY),
            AMQPValue::LongString(LongString::from(encode_headers(&message.headers))),
        );
        let properties = BasicProperties::default().with_headers(headers).with_delivery_mode(2);
        let confirm = tokio::time::timeout(self.settings.timeout, async {
            channel
                .basic_publish(
                    ShortString::from(self.settings.prefix.as_str()),
                    ShortString::from(routing_key),
                    BasicPublishOptions::default(),
                    &message.payload,
                    properties,
                )
                .await
                .map_err(|e| err("publish failed", e))?
                .await
                .map_err(|e| err("the broker did not confirm the message", e))
        })
        .await;
        match confirm {
            Ok(Ok(c)) if c.is_nack() => Err(PortError::unavailable(BACKEND, "the broker refused the message (nack)")),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                *self.publisher.lock().await = None;
                Err(e)
            }
            Err(_) => {
                *self.publisher.lock().await = None;
                Err(PortError::unavailable(BACKEND, "the publish was not confirmed in time"))
            }
        }
    }

    async fn subscribe(&self, topic: &str, group: &str) -> PortResult<Box<dyn Subscription>> {
        check_topic(topic)?;
        check_group(group)?;
        let mut sub = AmqpSubscription {
            settings: self.settings.clone(),
            topic: topic.to_owned(),
            queue: format!("{}.{group}.{}", self.settings.prefix, &crate::topics::digest(topic)[..16]),
            live: None,
            pending: None,
        };
        sub.connect().await?;
        Ok(Box::new(sub))
    }
}

struct AmqpSubscription {
    settings: AmqpSettings,
    topic: String,
    queue: String,
    live: Option<(Connection, lapin::Consumer)>,
    pending: Option<lapin::message::Delivery>,
}

impl AmqpSubscription {
    async fn connect(&mut self) -> PortResult<()> {
        let (conn, channel) = open(&self.settings).await?;
        let setup = async {
            channel
                .basic_qos(64, BasicQosOptions::default())
                .await
                .map_err(|e| err("cannot set the prefetch", e))?;
            channel
                .queue_declare(
                    ShortString::from(self.queue.as_str()),
                    QueueDeclareOptions { durable: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| err("cannot declare the queue", e))?;
            channel
                .queue_bind(
                    ShortString::from(self.queue.as_str()),
                    ShortString::from(self.settings.prefix.as_str()),
                    ShortString::from(format!("*.{}", encode_topic(&self.topic))),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| err("cannot bind the queue", e))?;
            channel
                .basic_consume(
                    ShortString::from(self.queue.as_str()),
                    ShortString::from(""),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| err("cannot start consuming", e))
        };
        let consumer = tokio::time::timeout(self.settings.timeout, setup)
            .await
            .map_err(|_| PortError::unavailable(BACKEND, "setting up the subscription timed out"))??;
        self.live = Some((conn, consumer));
        Ok(())
    }
}

#[async_trait]
impl Subscription for AmqpSubscription {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            let Some((_, consumer)) = self.live.as_mut() else {
                // Reconnect with a pause, for as long as it takes.
                if let Err(e) = self.connect().await {
                    tracing::warn!(error = %e, "RabbitMQ subscription lost; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                continue;
            };
            let delivery = match consumer.next().await {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "RabbitMQ consumer interrupted; reconnecting");
                    self.live = None;
                    continue;
                }
                None => {
                    self.live = None;
                    continue;
                }
            };
            let key = delivery.routing_key.as_str().to_owned();
            let parsed = key
                .split_once('.')
                .and_then(|(tenant, token)| Some((TenantId::new(tenant).ok()?, decode_topic(token)?)));
            let Some((tenant, topic)) = parsed else {
                tracing::warn!(routing_key = %key, "dropping a message whose routing key is not <tenant>.<topic>");
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                continue;
            };
            let headers = delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get(HEADERS_KEY).cloned())
                .and_then(|v| match v {
                    AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(decode_headers),
                    _ => None,
                })
                .unwrap_or_default();
            let out = Delivery { tenant, topic, message: Message { payload: delivery.data.clone(), headers } };
            self.pending = Some(delivery);
            return Some(out);
        }
    }

    async fn ack(&mut self) -> PortResult<()> {
        match self.pending.take() {
            Some(d) => d.acker.ack(BasicAckOptions::default()).await.map(|_| ()).map_err(|e| err("acknowledging failed", e)),
            None => Ok(()),
        }
    }
}
