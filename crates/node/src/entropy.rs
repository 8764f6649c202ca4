//! The node's source of identifiers and seeds, injectable like the clock.
//!
//! In production every draw comes from the operating system's CSPRNG. Tests (and
//! reproducibility runs) can start a node with a fixed seed, so the same scripted
//! workload produces the same invocation ids, execution seeds, event ids and keys, and
//! therefore byte-identical audit events, whatever the bound adapters are.

use std::sync::{Arc, Mutex};

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;

/// Where ids, seeds and credentials come from. Clones of a seeded source draw from
/// one stream: several in-process nodes given clones draw, between them, exactly what
/// one node would (a reproducibility run across a cluster).
#[derive(Clone)]
pub enum Entropy {
    /// The operating system's CSPRNG.
    Os,
    /// A ChaCha20 stream from a fixed seed (never for production credentials).
    Seeded(Arc<Mutex<ChaCha20Rng>>),
}

impl Entropy {
    pub fn seeded(seed: u64) -> Self {
        Entropy::Seeded(Arc::new(Mutex::new(ChaCha20Rng::seed_from_u64(seed))))
    }

    pub fn fill(&self, bytes: &mut [u8]) {
        match self {
            Entropy::Os => rand::rng().fill_bytes(bytes),
            Entropy::Seeded(rng) => rng.lock().unwrap_or_else(|p| p.into_inner()).fill_bytes(bytes),
        }
    }

    pub fn next_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }

    /// A time-ordered (version 7) UUID for an instant (Unix nanoseconds, from the
    /// node's clock): ids made later sort later, so the stores indexing them (the
    /// audit store's journal index) append instead of writing all over their index.
    pub fn uuid_at(&self, unix_nanos: u128) -> uuid::Uuid {
        let mut b = [0u8; 10];
        self.fill(&mut b);
        uuid::Builder::from_unix_timestamp_millis((unix_nanos / 1_000_000) as u64, &b).into_uuid()
    }

    /// A random (version 4) UUID.
    pub fn uuid(&self) -> uuid::Uuid {
        let mut b = [0u8; 16];
        self.fill(&mut b);
        uuid::Builder::from_random_bytes(b).into_uuid()
    }
}
