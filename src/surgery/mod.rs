//! The gradient-surgery math: row-wise DGS projection (feature space), its K-direction variant,
//! Gram and combine over tensor lists, and the solvers (PCGrad, orthogonal projection, DGS in
//! parameter space) that turn a Gram matrix into combine weights.
//!
//! Every op is generic over the storage type ([`Element`]: f32, f16, bf16) and accumulates in f32
//! or wider, never in the storage type. [`cpu`] is the fast backend; [`reference`] is the float64
//! oracle the tests compare against; [`args`] holds the argument types and the checks every
//! backend shares.

pub mod args;
pub mod backend;
pub mod compare;
/// The constants the CUDA kernels and the Rust side share (see the file).
pub mod contract;
pub mod convert;
pub mod cpu;
#[cfg(feature = "cuda-kernels")]
pub mod cuda;
pub mod element;
pub mod error;
pub mod reference;
pub mod rng;
pub mod solve;
pub mod transform;
pub mod verify;

pub use args::{
    DEFAULT_DEP_TOL, DEFAULT_EPS, HelpTerm, MAX_DIRECTIONS, MAX_OPERANDS, MultiProjection, Operand,
    RowProjection, RowStatsMut, TensorList,
};
pub use backend::{CpuBackend, HostBackend};
pub use element::{DType, Element};
pub use error::{Result, SurgeryError};
pub use solve::{Gram, PcGradPlan, Reduction};
pub use transform::Transform;
