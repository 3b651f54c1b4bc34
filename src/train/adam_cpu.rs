//! Adam's update over every trainable in one pass on the CPU: for each parameter, its gradient
//! and both moments are read once and written once, instead of the ten tensor ops (and ten
//! allocations) per parameter of the device-generic form. The arithmetic is the same, in the same
//! order, in f32: `m ← β₁m + (1 − β₁)g`, `v ← β₂v + (1 − β₂)g²`,
//! `p ← p − step · m / (√v / √(1 − β₂ᵗ) + ε)`.

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

/// One step's constants.
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub beta1: f32,
    pub beta2: f32,
    /// `1 − β₁` and `1 − β₂`, computed in f64 and rounded once (as PyTorch passes them).
    pub one_minus_beta1: f32,
    pub one_minus_beta2: f32,
    /// `lr / (1 − β₁ᵗ)`.
    pub step_size: f32,
    /// `√(1 − β₂ᵗ)`.
    pub bias2_sqrt: f32,
    pub eps: f32,
    /// Multiplies every gradient first (loss scaling's `1/scale`; 1 otherwise).
    pub grad_scale: f32,
}

/// Elements per parallel task.
const CHUNK: usize = 16 * 1024;

/// The update of one parameter, in place over f32 slices of one length.
pub fn update(s: &AdamStep, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    p.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .zip(g.par_chunks(CHUNK))
        .for_each(|((p, (m, v)), g)| {
            for (((p, m), v), g) in p.iter_mut().zip(m).zip(v).zip(g) {
                let g = if s.grad_scale == 1.0 {
                    *g
                } else {
                    g * s.grad_scale
                };
                *m = *m * s.beta1 + g * s.one_minus_beta1;
                *v = *v * s.beta2 + g * g * s.one_minus_beta2;
                *p -= *m / (v.sqrt() / s.bias2_sqrt + s.eps) * s.step_size;
            }
        });
}

/// Whether a parameter takes this path: an f32 tensor on the CPU.
pub fn applies(t: &Tensor) -> bool {
    matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32
}

/// The elements of a CPU f32 tensor, in order.
pub fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}
