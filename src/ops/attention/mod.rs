//! Fused attention (forward and backward) for CLIP's shapes: the CUDA kernels (`cuda`, feature
//! `cuda-kernels`; head dimension 64, f16/bf16) and their float64 reference ([`reference`]),
//! which the GPU tests hold them to. The layer op ([`crate::ops::block`]) computes attention per
//! head with materialised scores on the CPU; it does not call these kernels yet.

#[cfg(feature = "cuda-kernels")]
pub mod cuda;
pub mod reference;
