//! candle ops built on the surgery library: the official DGS hook as an autograd op.
//!
//! [`orthogonal_suppression`] is the identity in the forward pass; in the backward pass the
//! gradient reaching its input is replaced, row by row, by `g − (g·ĥ) ĥ` with
//! `ĥ = relu(harm) / (‖relu(harm)‖ + eps)` — exactly what the official code's `register_hook` on
//! the student features does. CPU tensors run [`cpu::dgs_rows`](crate::surgery::cpu::dgs_rows);
//! with the `cuda` feature, CUDA tensors run our fused kernel on candle's stream, with no host
//! synchronisation.

mod suppression;
#[cfg(feature = "cuda")]
mod suppression_cuda;

pub use suppression::{
    ProjectOffHarm, orthogonal_suppression, orthogonal_suppression_op_chain, project_off_harm,
};
