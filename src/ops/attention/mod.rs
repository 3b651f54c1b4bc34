//! Fused attention (forward and backward) for CLIP's shapes. So far its float64 reference
//! ([`reference`]), against which the fused CUDA kernel will be tested; the layer op
//! ([`crate::ops::block`]) computes attention per head with materialised scores meanwhile.

pub mod reference;
