//! Peak memory of a stretch of work, for `dgs bench step`.
//!
//! CUDA: candle allocates through cudarc, which uses stream-ordered allocation
//! (`cuMemAllocAsync`) from the device's default memory pool where the device supports it. That
//! pool keeps a high-water mark of the bytes held by live allocations (`USED_MEM_HIGH`), which
//! is what PyTorch's `torch.cuda.max_memory_allocated` reports for its own allocator. cuBLAS
//! workspaces and the context itself are outside the pool; `device_in_use` gives the driver's
//! whole-device view for those.
//!
//! CPU: the process's peak resident set (`VmHWM`), reset by writing `5` to
//! `/proc/self/clear_refs` (Linux; where the reset is refused the peak covers the whole process).

use candle_core::Device;

/// Start a new measurement: forget the peak seen so far.
pub fn reset_peak(device: &Device) {
    match device {
        Device::Cpu => {
            // Failure only widens the window the peak covers; the figure stays a true peak.
            let _ = std::fs::write("/proc/self/clear_refs", "5");
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            let _ = cuda::reset_pool_high_water(d);
        }
        #[allow(unreachable_patterns)]
        _ => {}
    }
}

/// The peak since the last [`reset_peak`] (see the module notes for what each device counts);
/// `None` where it cannot be read (a device without memory pools, a non-Linux host).
pub fn peak_bytes(device: &Device) -> Option<u64> {
    match device {
        Device::Cpu => {
            let status = std::fs::read_to_string("/proc/self/status").ok()?;
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => cuda::pool_high_water(d).ok(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Bytes of device memory in use as the driver sees it (every process and the context included);
/// `None` on the CPU.
pub fn device_in_use(device: &Device) -> Option<u64> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            let (free, total) = d.cuda_stream().context().mem_get_info().ok()?;
            Some(total.saturating_sub(free) as u64)
        }
        _ => None,
    }
}

#[cfg(feature = "cuda")]
mod cuda {
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

    pub fn reset_pool_high_water(d: &CudaDevice) -> Result<(), String> {
        let pool = default_pool(d)?;
        let mut zero: u64 = 0;
        // SAFETY: the driver accepts only 0 for USED_MEM_HIGH, read from a u64 location.
        check(
            unsafe {
                sys::cuMemPoolSetAttribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                    (&mut zero as *mut u64).cast(),
                )
            },
            "cuMemPoolSetAttribute(USED_MEM_HIGH)",
        )
    }
}
