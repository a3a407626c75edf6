//! The seeded generator of the property tests and fuzz targets (one copy for the crate).

/// Marsaglia's xorshift64: deterministic, tiny, good enough to draw test inputs. A zero state
/// stays zero: seed with a non-zero value.
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    #[expect(
        clippy::should_implement_trait,
        reason = "an endless generator, not an iterator"
    )]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items
            .get(self.below(items.len()))
            .copied()
            .unwrap_or_default()
    }
}
