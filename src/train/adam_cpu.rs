//! Which parameters take the CPU update (`surgery::cpu::adam`), and their elements.

use candle_core::{DType, Device, Result, Tensor};

/// Whether a parameter takes this path: an f32 tensor on the CPU.
pub fn applies(t: &Tensor) -> bool {
    matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32
}

/// The elements of a CPU f32 tensor, in order.
pub fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}
