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

#[cfg(feature = "cuda")]
use super::cuda_pool as cuda;

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
