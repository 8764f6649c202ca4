//! The control store lives in `runplane-control`; the node uses it through these names.

pub use runplane_control::{CapabilityVersion, ClusterNode, ConfigVersionRow, ControlError, ControlStore, Deployment, Home, StoredRollout, Tenant};
