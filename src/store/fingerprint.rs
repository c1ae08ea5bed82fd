//! Fingerprints of training data and input files, stable across runs and machines: a resumed
//! run checks it sees the same data, and `run.json` records what a run read.

/// A 64-bit FNV-1a hash, stable across runs and machines (for data fingerprints).
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Feeds bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 ^ x as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    /// Feeds a sequence of ids (with its length, so boundaries count).
    pub fn ids<T: Copy + Into<u64>>(&mut self, ids: &[T]) {
        self.bytes(&(ids.len() as u64).to_le_bytes());
        for &i in ids {
            self.bytes(&i.into().to_le_bytes());
        }
    }
    /// Feeds a pre-training sequence: its ids, and for a pair its IsNext label (so sequences
    /// without a label hash as before).
    pub fn sequence(&mut self, ids: &[u32], is_next: Option<bool>) {
        self.ids(ids);
        if let Some(next) = is_next {
            self.bytes(&[u8::from(next) + 1]);
        }
    }
    /// The hash as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

