//! The CUDA device's default memory pool (candle allocates through cudarc's stream-ordered
//! `cuMemAllocAsync`, which draws from it): its high-water mark for `dgs bench step`, and the
//! setting that keeps freed memory in the pool for the next step.

use candle_core::cuda_backend::CudaDevice;
use cudarc::driver::sys;

fn check(r: sys::CUresult, what: &str) -> Result<(), String> {
    if r == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(format!("{what}: {r:?}"))
    }
}

fn default_pool(d: &CudaDevice) -> Result<sys::CUmemoryPool, String> {
    let ctx = d.cuda_stream().context().clone();
    if !ctx.has_async_alloc() {
        return Err("the device has no memory pools; allocations bypass them".into());
    }
    ctx.bind_to_thread().map_err(|e| e.to_string())?;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: `pool` is a valid out-pointer; `cu_device` comes from a live context.
    check(
        unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) },
        "cuDeviceGetDefaultMemPool",
    )?;
    Ok(pool)
}

/// Sets a u64 attribute of the default pool.
fn set_u64(d: &CudaDevice, attr: sys::CUmemPool_attribute, mut value: u64) -> Result<(), String> {
    let pool = default_pool(d)?;
    // SAFETY: the attributes passed here are cuuint64_t ones, read from a u64 location.
    check(
        unsafe { sys::cuMemPoolSetAttribute(pool, attr, (&mut value as *mut u64).cast()) },
        "cuMemPoolSetAttribute",
    )
}

pub fn pool_high_water(d: &CudaDevice) -> Result<u64, String> {
    let pool = default_pool(d)?;
    let mut value: u64 = 0;
    // SAFETY: USED_MEM_HIGH is a cuuint64_t attribute; `value` is a u64 out-location.
    check(
        unsafe {
            sys::cuMemPoolGetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                (&mut value as *mut u64).cast(),
            )
        },
        "cuMemPoolGetAttribute(USED_MEM_HIGH)",
    )?;
    Ok(value)
}

/// The driver accepts only 0 for USED_MEM_HIGH.
pub fn reset_pool_high_water(d: &CudaDevice) -> Result<(), String> {
    set_u64(
        d,
        sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
        0,
    )
}

/// Keep freed memory in the pool instead of returning it to the driver at each synchronisation:
/// a training step frees and allocates the same sizes every step, and handing them back and
/// mapping them again costs time (PyTorch's caching allocator keeps them too). The release
/// threshold is the bytes a pool may hold unused before it trims at a synchronisation point.
pub fn keep_freed_memory(d: &CudaDevice) -> Result<(), String> {
    let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD;
    set_u64(d, attr, u64::MAX)
}
