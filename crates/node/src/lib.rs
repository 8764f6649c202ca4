//! A Runplane node: configuration, tenancy, bindings, the admin API and tenant traffic.
//!
//! [`Node::start`] opens the data directory (control store, audit store, component
//! store, compiled-component cache), restores tenants, keys and deployments, and
//! serves HTTP: `/v1/…` (admin, with the admin token), `/apps/{route}/…` (tenant
//! traffic, with a tenant API key), `/healthz`, `/livez`, `/readyz`, `/metrics` and
//! `/v1/openapi.json`; [`RunningNode::drain`] stops it without failing a request.
//!
//! Architecture invariant: the node is where tenancy is decided. A request's tenant
//! comes from its credential only; the node hands the host the tenant's `PortSet` and
//! an execution context, and capabilities never see either.

pub mod api;
mod archiver;
pub mod auth;
pub mod bindings;
pub mod ca;
pub mod entropy;
pub mod clock;
mod cluster;
pub mod config;
pub mod configsets;
pub mod control;
pub mod controlplane;
pub mod drain;
pub mod error;
mod follower;
mod jobs;
pub mod health;
mod listener;
pub mod metrics;
mod node;
pub mod prometheus;
mod quotas;
pub mod replay;
mod rollouts;
pub mod ratelimit;
pub mod server;
mod subscriptions;
pub mod tls;

pub use clock::{Clock, SystemClock};
pub use config::{Mode, NodeConfig};
pub use node::{Node, RunningNode, write_private};
