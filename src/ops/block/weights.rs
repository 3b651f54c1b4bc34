//! The frozen weights of one layer, and the check of every operand's size against them.

use candle_core::{Result, Shape, Tensor};

use super::dims::Dims;

/// The frozen weights of one layer, torch layout (`[out, in]`), q/k/v concatenated.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub ln1: (Tensor, Tensor),
    pub qkv: (Tensor, Tensor),
    pub out: (Tensor, Tensor),
    pub ln2: (Tensor, Tensor),
    pub fc1: (Tensor, Tensor),
    pub fc2: (Tensor, Tensor),
}

impl LayerWeights {
    pub(super) fn all(&self) -> [&Tensor; 12] {
        let pairs = [
            &self.ln1, &self.qkv, &self.out, &self.ln2, &self.fc1, &self.fc2,
        ];
        let mut all = [&self.ln1.0; 12];
        for (i, (w, b)) in pairs.into_iter().enumerate() {
            all[2 * i] = w;
            all[2 * i + 1] = b;
        }
        all
    }

    /// The sizes of a call on `x` (`[B, T, C]`), every weight checked against them.
    pub(super) fn dims(&self, x: &Shape, heads: usize) -> Result<Dims> {
        let (batch, seq, channels) = x.dims3()?;
        let intermediate = self.fc1.0.dim(0)?;
        let expected: [&[usize]; 12] = [
            &[channels],
            &[channels],
            &[3 * channels, channels],
            &[3 * channels],
            &[channels, channels],
            &[channels],
            &[channels],
            &[channels],
            &[intermediate, channels],
            &[intermediate],
            &[channels, intermediate],
            &[channels],
        ];
        for (t, want) in self.all().iter().zip(expected) {
            if t.dims() != want {
                candle_core::bail!("layer op: a weight is {:?}, expected {want:?}", t.dims())
            }
        }
        if heads == 0 || channels % heads != 0 || seq == 0 {
            candle_core::bail!("layer op: {channels} channels, {heads} heads, {seq} tokens")
        }
        Ok(Dims {
            batch,
            seq,
            channels,
            intermediate,
            heads,
        })
    }
}
