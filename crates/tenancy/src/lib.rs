//! Tenancy rules of the runtime plane, as values and pure functions, and the two async
//! gates that apply them:
//!
//! - [`quota`]: `ExecutionQuota` (spec §5.2), tier defaults, windowed budgets;
//! - [`fair`]: start-time fair queuing, the one algorithm behind
//! - [`scheduler`]: `TenantScheduler` (spec §5.3) — admission of invocations, and
//!   deterministic plans with `schedule_hash`;
//! - [`gate`]: `FairGate`, also used by the host to share CPU turns between tenants;
//! - [`contract`]: `RuntimeContract` (spec §6.6) — content-derived identity, JSON
//!   Schema validation of input and output.
//!
//! Architecture invariant: no I/O and no clock. Time arrives as a parameter; the node
//! persists and audits.

pub mod contract;
pub mod fair;
pub mod gate;
pub mod quota;
pub mod scheduler;

pub use contract::{ContractError, RuntimeContract, ValidatedContract};
pub use fair::{FairQueue, FlowLimits, QueueFull};
pub use gate::{Entry, FairGate, Pass};
pub use quota::{Budget, ExecutionQuota, Resource, Tier, WindowedBudget};
pub use scheduler::{Rejected, Schedule, ScheduledTask, Share, Task, TenantScheduler, TenantTasks, schedule_hash};

/// The protocol version every signed or hashed object carries (spec §6.5).
pub const PROTOCOL_VERSION: &str = "1.0";

/// What this crate refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
}
