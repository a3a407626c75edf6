//! The approximate nearest-neighbour graph of a large semantic partition: an HNSW index
//! (`usearch`) over unit vectors, searched by inner product.
//!
//! A partition ([`super::semantic`]) starts as a list scanned exactly; once it holds
//! [`GRAPH_FROM`] points of one dimension they move into a graph, and later points of that
//! dimension are added to it. The graph holds the vectors (the partition keeps only their
//! ids), removes points (their slots are reused by later additions), and searches with a
//! filter, so expired points and answers that call tools are skipped during the search
//! rather than after it. What goes wrong in it (out of memory, no free search slot) is a
//! `None` or `false` here: the caller counts it as a miss, or keeps the point in its list.

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

/// Points of one dimension a partition holds before they move into a graph: below this an
/// exact scan is as fast (256 points of 1,536 dimensions: 0.4 M multiply-adds).
pub const GRAPH_FROM: usize = 256;

/// Searches that may run at once on one graph (each needs a context of its own): more than
/// a gateway runs worker threads (`server.threads`); one beyond it is a miss, not a wait.
const SEARCHERS: usize = 64;

/// Bytes a point costs in the graph beyond its vector: its neighbour lists (16 links on
/// upper levels, 32 on the base level, 4 bytes each), its key and level.
pub const LINK_BYTES: usize = 192;

/// Bytes a graph costs whatever it holds: a vector-sized buffer per searcher and the
/// index's own structures.
pub fn base_bytes(dims: usize) -> usize {
    SEARCHERS * dims * 4 + (64 << 10)
}

/// One partition's graph.
pub struct Graph {
    index: Index,
    dims: usize,
}

impl Graph {
    /// A graph of `points` (ids and unit vectors of `dims` values); `None` when the index
    /// cannot be made or a point cannot be added.
    pub fn build(dims: usize, points: &[(u64, &[f32])]) -> Option<Graph> {
        let options = IndexOptions {
            dimensions: dims,
            metric: MetricKind::IP,
            quantization: ScalarKind::F32,
            ..IndexOptions::default()
        };
        let index = Index::new(&options).ok()?;
        index
            .reserve_capacity_and_threads((2 * points.len()).max(GRAPH_FROM), SEARCHERS)
            .ok()?;
        let graph = Graph { index, dims };
        for &(id, v) in points {
            if !graph.add(id, v) {
                return None;
            }
        }
        Some(graph)
    }

    /// The dimension of its vectors.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Points it holds.
    pub fn points(&self) -> usize {
        self.index.size()
    }

    /// Add a point (doubling the capacity when full); `false` when it could not be added.
    pub fn add(&self, id: u64, vector: &[f32]) -> bool {
        if vector.len() != self.dims {
            return false;
        }
        let (size, capacity) = (self.index.size(), self.index.capacity());
        if size >= capacity
            && self
                .index
                .reserve_capacity_and_threads((2 * capacity).max(GRAPH_FROM), SEARCHERS)
                .is_err()
        {
            return false;
        }
        self.index.add(id, vector).is_ok()
    }

    /// Remove a point.
    pub fn remove(&self, id: u64) {
        // An id it does not hold removes nothing; an error leaves a point no lookup finds
        // (the partition no longer names it).
        let _ = self.index.remove(id);
    }

    /// The nearest point `keep` accepts, and its similarity (the inner product).
    pub fn nearest(&self, vector: &[f32], keep: impl Fn(u64) -> bool) -> Option<(u64, f32)> {
        if vector.len() != self.dims || self.index.size() == 0 {
            return None;
        }
        let found = self.index.filtered_search(vector, 1, keep).ok()?;
        let (&id, &distance) = found.keys.first().zip(found.distances.first())?;
        // The inner-product metric's distance is 1 - the product.
        Some((id, 1.0 - distance))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn unit(seed: u64, dims: usize) -> Vec<f32> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let v: Vec<f32> = (0..dims).map(|_| rng.f32() - 0.5).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    #[test]
    fn finds_near_points_skips_filtered_and_removed_ones() {
        let dims = 48;
        let vs: Vec<Vec<f32>> = (0..2_000).map(|i| unit(i, dims)).collect();
        let first: Vec<(u64, &[f32])> = vs
            .iter()
            .take(300)
            .enumerate()
            .map(|(i, v)| (i as u64, v.as_slice()))
            .collect();
        let g = Graph::build(dims, &first).unwrap();
        for (i, v) in vs.iter().enumerate().skip(300) {
            assert!(g.add(i as u64, v));
        }
        assert_eq!(g.points(), 2_000);
        for i in (0..2_000).step_by(7) {
            let (id, score) = g.nearest(&vs[i], |_| true).unwrap();
            assert_eq!(id, i as u64);
            assert!(score > 0.999, "{score}");
        }
        // The filter is applied while searching: the nearest accepted point is found.
        let (id, _) = g.nearest(&vs[5], |id| id != 5).unwrap();
        assert_ne!(id, 5);
        assert!(g.nearest(&vs[5], |_| false).is_none());
        g.remove(5);
        assert_ne!(g.nearest(&vs[5], |_| true).unwrap().0, 5);
        assert_eq!(g.points(), 1_999);
        assert!(!g.add(9_999, &unit(1, dims + 1)), "another dimension");
        assert!(g.nearest(&unit(1, dims + 1), |_| true).is_none());
    }
}
