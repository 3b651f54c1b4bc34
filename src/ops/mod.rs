//! candle ops built on the surgery library: the official DGS hook as an autograd op; and the two
//! fused transformer ops with a backward pass that training CLIP on the GPU needs
//! ([`layer_norm`], [`softmax_last_dim`]); and [`frozen_linear`], a frozen layer whose backward
//! computes the input gradient only.
//!
//! [`orthogonal_suppression`] is the identity in the forward pass; in the backward pass the
//! gradient reaching its input is replaced, row by row, by `g − (g·ĥ) ĥ` with
//! `ĥ = relu(harm) / (‖relu(harm)‖ + eps)` — exactly what the official code's `register_hook` on
//! the student features does. CPU tensors run [`cpu::dgs_rows`](crate::surgery::cpu::dgs_rows);
//! with the `cuda` feature, CUDA tensors run our fused kernel on candle's stream, with no host
//! synchronisation.

pub mod attention;
pub mod block;
#[cfg(feature = "cuda")]
mod device_cache;
mod dtype;
mod frozen_linear;
mod last_dim;
mod layer_norm;
mod repeat;
mod softmax;
mod suppression;
#[cfg(feature = "cuda")]
mod suppression_cuda;

pub use block::Activation;
pub use frozen_linear::frozen_linear;
pub use layer_norm::layer_norm;
pub use softmax::softmax_last_dim;
pub use suppression::{
    ProjectOffHarm, orthogonal_suppression, orthogonal_suppression_op_chain, project_off_harm,
};
#[cfg(feature = "cuda")]
pub(crate) use suppression_cuda::surgery_for;
