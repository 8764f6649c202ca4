//! The stored Merkle tree: which subtree hashes are kept, how an append extends the
//! tree in O(log n), and how roots and proofs are assembled from stored hashes without
//! a rebuild. Pure functions over values; the stores do the I/O.
//!
//! A *perfect node* `(level, index)` is the root of the `2^level` leaves starting at
//! `index << level`. Leaf hashes (level 0) are stored with their events; interior
//! perfect nodes are stored only at levels that are multiples of [`STRIDE`] (like
//! tlog tiles of height 4), so a log of `n` events stores about `n / 15` extra hashes,
//! and any perfect node is at most `2^(STRIDE-1)` stored hashes away.
//!
//! Every proof element of RFC 9162 is the root of a range of leaves; a range splits
//! into perfect nodes ([`perfect_nodes`]) whose right fold is its root. So a proof is
//! computed as: ranges (from the sizes alone) → perfect nodes → stored nodes to fetch
//! → hashes. [`crate::merkle`] (which works on the full leaf list) is the reference
//! these functions are tested against.

use std::collections::BTreeMap;

use crate::merkle::{Hash, empty_root, node_hash};

/// Interior perfect nodes are stored at levels `STRIDE, 2·STRIDE, …`.
pub const STRIDE: u32 = 4;

/// The root of the `2^level` leaves starting at leaf `index << level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    pub level: u32,
    pub index: u64,
}

impl Node {
    /// Whether this node's hash is kept in storage.
    pub fn is_stored(self) -> bool {
        self.level.is_multiple_of(STRIDE)
    }

    /// The stored nodes whose hashes determine this one: the whole row of stored
    /// descendants at the nearest stored level at or below it.
    pub fn stored_cover(self) -> std::ops::Range<Node> {
        let base = self.level - self.level % STRIDE;
        let shift = self.level - base;
        let first = Node { level: base, index: self.index << shift };
        let end = Node { level: base, index: (self.index + 1) << shift };
        first..end
    }
}

/// The perfect nodes that make up the leaves `[start, end)`, left to right, each as
/// large as alignment allows. For the ranges of an RFC 9162 tree (and for `[0, n)`)
/// the right fold of their hashes is the range's root.
pub fn perfect_nodes(start: u64, end: u64) -> Vec<Node> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let mut level = if at == 0 { 63 } else { at.trailing_zeros() };
        while level > 0 && (1u64 << level) > end - at {
            level -= 1;
        }
        out.push(Node { level, index: at >> level });
        at += 1u64 << level;
    }
    out
}

/// A range of leaves `[start, end)` whose root is one proof element.
pub type Span = (u64, u64);

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The spans whose roots form the inclusion proof of leaf `index` in the tree of
/// `size` leaves (RFC 9162 §2.1.3.1, PATH), in proof order; `None` if out of range.
pub fn inclusion_spans(index: u64, size: u64) -> Option<Vec<Span>> {
    if index >= size {
        return None;
    }
    let mut out = Vec::new();
    path(index, 0, size, &mut out);
    Some(out)
}

fn path(m: u64, start: u64, n: u64, out: &mut Vec<Span>) {
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(m, start, k, out);
        out.push((start + k, start + n));
    } else {
        path(m - k, start + k, n - k, out);
        out.push((start, start + k));
    }
}

/// The spans whose roots form the consistency proof from size `first` to size
/// `second` (RFC 9162 §2.1.4.1, PROOF), in proof order; `None` if `first > second`.
pub fn consistency_spans(first: u64, second: u64) -> Option<Vec<Span>> {
    if first > second {
        return None;
    }
    let mut out = Vec::new();
    if first > 0 {
        subproof(first, 0, second, true, &mut out);
    }
    Some(out)
}

fn subproof(m: u64, start: u64, n: u64, complete: bool, out: &mut Vec<Span>) {
    if m == n {
        if !complete {
            out.push((start, start + n));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, start, k, complete, out);
        out.push((start + k, start + n));
    } else {
        subproof(m - k, start + k, n - k, false, out);
        out.push((start, start + k));
    }
}

/// The stored nodes to fetch to compute the roots of `spans`, as one contiguous
/// index range per (level, run): `(level, first index, end index)`, sorted and merged.
pub fn stored_ranges(spans: &[Span]) -> Vec<(u32, u64, u64)> {
    let mut wanted: Vec<(u32, u64, u64)> = spans
        .iter()
        .flat_map(|&(s, e)| perfect_nodes(s, e))
        .map(|n| {
            let c = n.stored_cover();
            (c.start.level, c.start.index, c.end.index)
        })
        .collect();
    wanted.sort();
    let mut merged: Vec<(u32, u64, u64)> = Vec::new();
    for (level, s, e) in wanted {
        match merged.last_mut() {
            Some((l, _, end)) if *l == level && s <= *end => *end = (*end).max(e),
            _ => merged.push((level, s, e)),
        }
    }
    merged
}

/// Stored hashes by node, as fetched for [`stored_ranges`].
pub type Stored = BTreeMap<Node, Hash>;

/// Why stored hashes could not give a root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored hash missing for level {} index {}", .0.level, .0.index)]
pub struct Missing(pub Node);

/// The hash of a perfect node, from the stored row below it.
pub fn node_from_stored(node: Node, stored: &Stored) -> Result<Hash, Missing> {
    let cover = node.stored_cover();
    let mut row = Vec::with_capacity((cover.end.index - cover.start.index) as usize);
    for index in cover.start.index..cover.end.index {
        let n = Node { level: cover.start.level, index };
        row.push(*stored.get(&n).ok_or(Missing(n))?);
    }
    while row.len() > 1 {
        row = row.chunks(2).map(|p| node_hash(&p[0], &p[1])).collect();
    }
    Ok(row[0])
}

/// The root of `[start, end)`: the right fold of its perfect nodes.
pub fn span_root(span: Span, stored: &Stored) -> Result<Hash, Missing> {
    let nodes = perfect_nodes(span.0, span.1);
    let mut acc: Option<Hash> = None;
    for n in nodes.into_iter().rev() {
        let h = node_from_stored(n, stored)?;
        acc = Some(match acc {
            None => h,
            Some(right) => node_hash(&h, &right),
        });
    }
    Ok(acc.unwrap_or_else(empty_root))
}

/// The right edge of a tree: the hashes of the perfect nodes of `[0, size)`, left to
/// right. Appending a leaf is O(log n) and tells which stored nodes it completed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of a tree of `size` leaves from its perfect nodes' hashes.
    pub fn new(size: u64, hashes: Vec<Hash>) -> Option<Self> {
        (hashes.len() == size.count_ones() as usize).then_some(Frontier { size, hashes })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; calls `stored` for every interior node it completes at a
    /// stored level (the leaf itself is not reported).
    pub fn push(&mut self, leaf: Hash, mut stored: impl FnMut(Node, Hash)) {
        let mut hash = leaf;
        let mut level = 0;
        while (self.size >> level) & 1 == 1 {
            let left = self.hashes.pop().unwrap_or_else(empty_root);
            hash = node_hash(&left, &hash);
            level += 1;
            let node = Node { level, index: self.size >> level };
            if node.is_stored() {
                stored(node, hash);
            }
        }
        self.hashes.push(hash);
        self.size += 1;
    }

    /// The tree's root (RFC 9162 MTH).
    pub fn root(&self) -> Hash {
        let mut it = self.hashes.iter().rev();
        match it.next() {
            None => empty_root(),
            Some(last) => it.fold(*last, |acc, h| node_hash(h, &acc)),
        }
    }

    /// The hashes, concatenated (how stores keep a log's head).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.hashes.concat()
    }

    /// The inverse of [`Frontier::to_bytes`] for a tree of `size` leaves.
    pub fn from_bytes(size: u64, bytes: &[u8]) -> Option<Self> {
        if !bytes.len().is_multiple_of(32) {
            return None;
        }
        let hashes = bytes.chunks(32).map(|c| c.try_into().unwrap_or([0; 32])).collect();
        Frontier::new(size, hashes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| merkle::leaf_hash(&i.to_be_bytes())).collect()
    }

    /// Every stored node of a tree of `n` leaves, as an append-only store keeps them.
    fn store_of(leaves: &[Hash]) -> (Frontier, Stored) {
        let mut stored = Stored::new();
        let mut f = Frontier::default();
        for (i, l) in leaves.iter().enumerate() {
            stored.insert(Node { level: 0, index: i as u64 }, *l);
            f.push(*l, |n, h| {
                stored.insert(n, h);
            });
        }
        (f, stored)
    }

    #[test]
    fn frontier_roots_match_the_reference() {
        let all = leaves(300);
        let mut f = Frontier::default();
        assert_eq!(f.root(), merkle::empty_root());
        for (i, l) in all.iter().enumerate() {
            f.push(*l, |_, _| {});
            assert_eq!(f.root(), merkle::root(&all[..=i]), "size {}", i + 1);
            let back = Frontier::from_bytes(f.size(), &f.to_bytes()).expect("round trip");
            assert_eq!(back, f);
        }
    }

    #[test]
    fn stored_nodes_are_the_roots_of_their_leaves() {
        let all = leaves(1000);
        let (_, stored) = store_of(&all);
        for (node, hash) in &stored {
            let start = (node.index << node.level) as usize;
            let end = ((node.index + 1) << node.level) as usize;
            assert_eq!(*hash, merkle::root(&all[start..end]), "{node:?}");
            assert!(node.is_stored());
        }
        let interior = stored.keys().filter(|n| n.level > 0).count();
        assert_eq!(interior, 1000 / 16 + 1000 / 256, "one stored interior node per 16 leaves and per 256");
    }

    #[test]
    fn proofs_from_stored_hashes_equal_the_reference() {
        for n in 1..=130u64 {
            let all = leaves(n);
            let (_, stored) = store_of(&all);
            for m in 0..n {
                let spans = inclusion_spans(m, n).expect("in range");
                for (level, s, e) in stored_ranges(&spans) {
                    for index in s..e {
                        assert!(stored.contains_key(&Node { level, index }), "n={n} m={m} needs a stored node");
                    }
                }
                let proof: Vec<Hash> = spans.iter().map(|s| span_root(*s, &stored).expect("stored")).collect();
                assert_eq!(proof, merkle::inclusion_proof(m as usize, &all).expect("reference"), "inclusion n={n} m={m}");
            }
            for m in 0..=n {
                let spans = consistency_spans(m, n).expect("ordered");
                let proof: Vec<Hash> = spans.iter().map(|s| span_root(*s, &stored).expect("stored")).collect();
                assert_eq!(proof, merkle::consistency_proof(m as usize, &all).expect("reference"), "consistency {m}->{n}");
            }
            assert_eq!(span_root((0, n), &stored).expect("root"), merkle::root(&all));
        }
    }

    #[test]
    fn perfect_nodes_cover_ranges_exactly() {
        assert_eq!(perfect_nodes(0, 7), vec![Node { level: 2, index: 0 }, Node { level: 1, index: 2 }, Node { level: 0, index: 6 }]);
        assert_eq!(perfect_nodes(8, 12), vec![Node { level: 2, index: 2 }]);
        assert!(perfect_nodes(5, 5).is_empty());
        assert_eq!(perfect_nodes(0, 1 << 40), vec![Node { level: 40, index: 0 }]);
    }

    #[test]
    fn a_missing_stored_hash_is_named() {
        let all = leaves(40);
        let (_, mut stored) = store_of(&all);
        stored.remove(&Node { level: 4, index: 1 });
        let err = span_root((0, 40), &stored).expect_err("missing");
        assert_eq!(err, Missing(Node { level: 4, index: 1 }));
    }

    #[test]
    fn frontier_of_the_wrong_shape_is_refused() {
        assert!(Frontier::new(3, vec![[0; 32]]).is_none());
        assert!(Frontier::from_bytes(1, &[0; 31]).is_none());
    }
}
