//! The frozen weights of one layer, and the check of every operand's size against them.

use std::sync::{Arc, OnceLock};

use candle_core::{DType, Result, Shape, Tensor};

use super::dims::Dims;

/// The frozen weights of one layer, torch layout (`[out, in]`), q/k/v concatenated.
///
/// They are constants of the layer op: once a layer has run forward on the CPU, its forward
/// reads a copy of the projections made then, so a change to these tensors afterwards (in place,
/// or by replacing a field) is not seen. Build a new `LayerWeights` (or clone one: a clone makes
/// its own copy on first use) for other weights.
#[derive(Debug)]
pub struct LayerWeights {
    pub ln1: (Tensor, Tensor),
    pub qkv: (Tensor, Tensor),
    pub out: (Tensor, Tensor),
    pub ln2: (Tensor, Tensor),
    pub fc1: (Tensor, Tensor),
    pub fc2: (Tensor, Tensor),
    /// The CPU forward's copy of the projections, made on its first call.
    forward_projections: OnceLock<Arc<ForwardProjections>>,
}

/// The four projection weights in f32 transposed to `[in, out]`, for the CPU forward.
///
/// The forward's products are `y = a · Wᵀ`. Read through the torch layout, `Wᵀ`'s columns are
/// contiguous, and the `gemm` crate then either re-packs the whole weight by a strided gather
/// on every call or reads it strided: the fc2 and out-projection products ran at half the rate
/// of the same products with `Wᵀ` stored row by row (measured on a 2-core AVX-512 VM, 2026-12-02:
/// fc2 of ViT-B/32 at batch 4, 112 against 243 GFLOP/s). The backward's `g · W` reads `W` row by
/// row already, so it keeps the torch layout. The price is one more copy of the projections in
/// host memory (their size again, in f32) for each layer that has run forward on the CPU.
#[derive(Debug)]
pub(super) struct ForwardProjections {
    pub qkv: Vec<f32>,
    pub out: Vec<f32>,
    pub fc1: Vec<f32>,
    pub fc2: Vec<f32>,
}

impl Clone for LayerWeights {
    /// The tensors (shared, as tensors are); not the CPU forward's copy, so that a clone whose
    /// fields are then replaced never reads the original's projections.
    fn clone(&self) -> Self {
        Self::new(
            self.ln1.clone(),
            self.qkv.clone(),
            self.out.clone(),
            self.ln2.clone(),
            self.fc1.clone(),
            self.fc2.clone(),
        )
    }
}

impl LayerWeights {
    /// The layer's frozen weights in its order: layer norm 1, q/k/v (concatenated `[3C, C]`),
    /// out-projection, layer norm 2, fc1, fc2; each a (weight, bias) pair.
    pub fn new(
        ln1: (Tensor, Tensor),
        qkv: (Tensor, Tensor),
        out: (Tensor, Tensor),
        ln2: (Tensor, Tensor),
        fc1: (Tensor, Tensor),
        fc2: (Tensor, Tensor),
    ) -> Self {
        Self {
            ln1,
            qkv,
            out,
            ln2,
            fc1,
            fc2,
            forward_projections: OnceLock::new(),
        }
    }

    /// The projections transposed for the CPU forward, made on the first call (the weights are
    /// frozen: they never change after).
    pub(super) fn forward_projections(&self) -> Result<Arc<ForwardProjections>> {
        if let Some(made) = self.forward_projections.get() {
            return Ok(made.clone());
        }
        let transposed = |w: &Tensor| -> Result<Vec<f32>> {
            w.t()?
                .to_dtype(DType::F32)?
                .contiguous()?
                .flatten_all()?
                .to_vec1()
        };
        let made = Arc::new(ForwardProjections {
            qkv: transposed(&self.qkv.0)?,
            out: transposed(&self.out.0)?,
            fc1: transposed(&self.fc1.0)?,
            fc2: transposed(&self.fc2.0)?,
        });
        // Two first calls at once both make it; one copy is kept.
        Ok(self.forward_projections.get_or_init(|| made).clone())
    }

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
