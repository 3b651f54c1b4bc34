//! What every launch shares: the one place a launch configuration is built, the check that a size
//! fits the kernels' `int`, and the transform codes of the contract.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream, LaunchConfig};

use super::error::{CudaResult, CudaSurgeryError};
use crate::surgery::contract;
use crate::surgery::transform::Transform;

/// A one-dimensional launch of `blocks` blocks (at least one, at most the grid's x limit; the
/// kernels loop over further work) of `threads` threads, with no dynamic shared memory.
pub(crate) fn launch_config(blocks: usize, threads: u32) -> LaunchConfig {
    const MAX_GRID_X: usize = (1 << 31) - 1;
    LaunchConfig {
        grid_dim: (blocks.clamp(1, MAX_GRID_X) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A launch's stream must belong to the context its kernels were loaded into.
pub(crate) fn check_stream_context(
    op: &'static str,
    stream: &CudaStream,
    ctx: &Arc<CudaContext>,
) -> CudaResult<()> {
    if !Arc::ptr_eq(stream.context(), ctx) {
        return Err(CudaSurgeryError::WrongContext {
            op,
            arg: "stream",
            expected: ctx.ordinal(),
        });
    }
    Ok(())
}

/// The alignment in bytes of every operand address: the kernels' 16-byte vector accesses and the
/// cuBLASLt plans' minimum alignment.
pub(crate) const OPERAND_ALIGNMENT: u64 = 16;

/// Every named device address is [`OPERAND_ALIGNMENT`]-aligned, or an invalid-value error naming
/// the first that is not.
pub(crate) fn check_aligned(op: &'static str, pointers: &[(&'static str, u64)]) -> CudaResult<()> {
    match pointers
        .iter()
        .find(|(_, address)| address % OPERAND_ALIGNMENT != 0)
    {
        Some(&(arg, address)) => Err(super::error::invalid(
            op,
            arg,
            format!("{address:#x}"),
            "operands must be 16-byte aligned",
        )),
        None => Ok(()),
    }
}

/// Headroom below `i32::MAX` for a row's length: the row kernels walk a row with an `int` index
/// that steps by up to threads × vector width (≤ 1024 × 8) and may pass the row's end by one step
/// before the loop test stops it, so the row must end at least one step before `int` overflows.
const ROW_INDEX_HEADROOM: usize = 1 << 16;

/// The largest row length (`dim`) a row kernel takes.
const MAX_ROW_DIM: usize = i32::MAX as usize - ROW_INDEX_HEADROOM;

/// A row length as the kernels' `int`, or [`CudaSurgeryError::TooLarge`] past [`MAX_ROW_DIM`].
pub(super) fn row_dim_to_i32(op: &'static str, dim: usize) -> CudaResult<i32> {
    if dim > MAX_ROW_DIM {
        return Err(CudaSurgeryError::TooLarge {
            op,
            what: "dim",
            got: dim,
            max: MAX_ROW_DIM,
        });
    }
    // In range: MAX_ROW_DIM < i32::MAX.
    Ok(dim as i32)
}

/// The kernels' code for a transform (`TransformCode` in the generated contract header).
pub(super) fn transform_code(t: Transform) -> i32 {
    match t {
        Transform::Identity => contract::TRANSFORM_IDENTITY,
        Transform::Relu => contract::TRANSFORM_RELU,
        Transform::NegativePart => contract::TRANSFORM_NEGATIVE_PART,
    }
}

/// Threads per row for the row kernels: enough 16-byte vectors of `T` to cover a row of `dim`
/// once, in whole warps, 32..=256.
pub(super) fn row_threads<T>(dim: usize) -> u32 {
    let per_vec = 16 / size_of::<T>();
    let vectors = dim.div_ceil(per_vec).max(1);
    (vectors.div_ceil(32) * 32).clamp(32, 256) as u32
}

/// Declares a `#[repr(C)]` struct a kernel argument passed by value, and checks at compile time
/// its size against the contract constant the kernel `static_assert`s (`$bytes`) and its
/// alignment against [`ARGS_ALIGN`](crate::surgery::contract::ARGS_ALIGN), so a field added on
/// one side only fails the build.
macro_rules! kernel_args {
    ($name:ident, $bytes:expr) => {
        // SAFETY: `$name` is `repr(C)` with the field order and types of the kernel's struct of
        // the same name; size and alignment are asserted just below against the numbers the
        // kernel asserts too, so its bytes are a valid kernel argument.
        unsafe impl cudarc::driver::DeviceRepr for $name {}
        const _: () = assert!(size_of::<$name>() == $bytes);
        const _: () = assert!(align_of::<$name>() == $crate::surgery::contract::ARGS_ALIGN);
    };
}
pub(crate) use kernel_args;

/// A launch over a three-dimensional grid of `threads`-thread blocks, no dynamic shared memory.
/// Each extent must be at least 1 and within the device's limits (callers check them).
pub(crate) fn grid_config(grid: (u32, u32, u32), threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_whose_index_would_overflow_int_is_refused() {
        for dim in [i32::MAX as usize, i32::MAX as usize - 1, MAX_ROW_DIM + 1] {
            let err = row_dim_to_i32("test", dim).expect_err("dim near i32::MAX must be refused");
            assert!(
                matches!(err, CudaSurgeryError::TooLarge { what: "dim", .. }),
                "{err}"
            );
        }
        assert_eq!(
            row_dim_to_i32("test", MAX_ROW_DIM).ok(),
            Some(MAX_ROW_DIM as i32)
        );
        assert_eq!(row_dim_to_i32("test", 0).ok(), Some(0));
    }
}
