//! The CUDA backend (feature `cuda-kernels`): our hand-written kernels (`kernels/*.cu`, compiled
//! by build.rs into fatbins embedded here), launched through cudarc on a caller-given stream.
//!
//! - [`CudaSurgery`]: the device handle; [`CudaSurgery::dgs_rows`] and
//!   [`CudaSurgery::project_rows_multi`] for feature-space surgery;
//! - [`TensorLists`] / [`OutputList`]: gradient lists as device tables, for
//!   [`CudaSurgery::gram`], [`CudaSurgery::combine`] and [`CudaSurgery::pcgrad`];
//! - [`CudaSurgery::adam`]: one Adam step over every trainable tensor, one launch on the same
//!   tables (the optimiser's CUDA path; twin of `cpu::adam`);
//! - [`CudaBackend`]: the same ops on host slices (copy in, run, copy out), the form the shared
//!   test bodies and `dgs self-check --device cuda` use.
//!
//! One module per op, named as in docs/kernels.md (which also explains the kernels' design and
//! the Rust–CUDA contract). No op synchronises the host; arguments are checked before any launch with the same errors as
//! the CPU backend; every launch error is returned. Without a driver or device,
//! [`CudaSurgery::new`] returns [`CudaSurgeryError::NoCudaDevice`].

mod adam;
mod combine;
pub(crate) mod device;
pub(crate) mod error;
mod gram;
mod host;
pub(crate) mod launch;
mod multi_dir;
mod pcgrad;
mod rowwise;
mod tensor_list;

pub use adam::AdamTensor;
pub use cudarc;
pub use device::{CudaSurgery, DeviceElement};
pub use error::{CudaResult, CudaSurgeryError};
pub use host::CudaBackend;
pub use pcgrad::PcGradScratch;
pub use rowwise::{DeviceRowProjection, DeviceRowStats};
pub use tensor_list::{OutputList, TensorLists};
