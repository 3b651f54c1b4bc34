//! The sizes of one layer call, checked once against every operand.

/// `batch × seq` tokens of `channels`, `heads` attention heads, an MLP of `intermediate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub batch: usize,
    pub seq: usize,
    pub channels: usize,
    pub intermediate: usize,
    pub heads: usize,
}

impl Dims {
    pub fn tokens(&self) -> usize {
        self.batch * self.seq
    }

    pub fn head_dim(&self) -> usize {
        self.channels / self.heads
    }
}
