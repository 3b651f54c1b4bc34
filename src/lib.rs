//! # dgs
//!
//! DGS-Net detectors of AI-generated images: CLIP fine-tuned with LoRA under distillation-guided
//! gradient surgery. This crate starts with the surgery itself ([`surgery`]), usable on its own
//! from any training loop: the row-wise DGS projection of feature gradients, and Gram / combine
//! passes over lists of parameter gradients with the solvers (PCGrad and friends) between them.
//!
//! ```
//! use dgs::surgery::{cpu, RowProjection, RowStatsMut};
//!
//! // Two rows of a feature gradient and the harm gradient that guides the projection.
//! let mut grad = vec![1.0f32, 2.0, 3.0, -1.0, 0.5, 2.0];
//! let harm = vec![0.0f32, 1.0, 0.0, -3.0, -1.0, -2.0];
//! cpu::dgs_rows(&mut grad, &RowProjection::new(2, 3, &harm), RowStatsMut::default())?;
//! assert!(grad[1].abs() < 1e-5);                 // row 0 lost its component along ĥ = e₁
//! assert_eq!(&grad[3..], &[-1.0, 0.5, 2.0]);     // row 1: relu(h) = 0, unchanged
//! # Ok::<(), dgs::surgery::SurgeryError>(())
//! ```

pub mod clip;
pub mod data;
pub mod eval;
pub mod ops;
pub mod pipeline;
pub mod surgery;
pub mod train;

/// Re-exported so [`dispatch_dtype!`] and users name the same `f16`/`bf16`.
pub use half;

/// The README's code runs as a doctest, so it cannot drift from the API.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
