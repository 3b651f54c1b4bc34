//! Storage types the surgery accepts. Values are always widened to f32 before any arithmetic, so
//! the storage type only decides how inputs are rounded and how results are stored.

use half::{bf16, f16};
use std::fmt;

/// Runtime tag of a storage type; the one place that maps names to types is [`dispatch_dtype!`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub const ALL: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(DType::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            other => Err(format!(
                "unknown dtype `{other}` (expected f32, f16 or bf16)"
            )),
        }
    }
}

/// What the CUDA backend needs of a storage type; nothing without the `cuda-kernels` feature.
#[cfg(feature = "cuda-kernels")]
pub trait DeviceBound: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits {}
#[cfg(feature = "cuda-kernels")]
impl<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits> DeviceBound for T {}
/// What the CUDA backend needs of a storage type; nothing without the `cuda-kernels` feature.
#[cfg(not(feature = "cuda-kernels"))]
pub trait DeviceBound {}
#[cfg(not(feature = "cuda-kernels"))]
impl<T> DeviceBound for T {}

/// A storage element: f32, f16 or bf16.
pub trait Element:
    bytemuck::Pod + Send + Sync + PartialEq + fmt::Debug + DeviceBound + 'static
{
    const DTYPE: DType;
    fn to_f32(self) -> f32;
    /// Round to nearest even, as the hardware conversions do.
    fn from_f32(v: f32) -> Self;

    /// Widen a block; the f16 path uses the CPU's conversion instructions where present.
    #[inline(always)]
    fn widen(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }

    #[inline(always)]
    fn narrow(src: &[f32], dst: &mut [Self]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = Self::from_f32(*s);
        }
    }

    /// Eight values at once, the unit of the CPU kernels' inner loops; kept in one register.
    #[inline(always)]
    fn load8(src: &[Self; 8]) -> [f32; 8] {
        let mut out = [0.0; 8];
        Self::widen(src, &mut out);
        out
    }

    #[inline(always)]
    fn store8(v: &[f32; 8], dst: &mut [Self; 8]) {
        Self::narrow(v, dst);
    }

    fn to_f64(self) -> f64 {
        f64::from(self.to_f32())
    }
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn widen(src: &[Self], dst: &mut [f32]) {
        dst[..src.len()].copy_from_slice(src);
    }
    #[inline(always)]
    fn narrow(src: &[f32], dst: &mut [Self]) {
        let n = dst.len();
        dst.copy_from_slice(&src[..n]);
    }
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    #[inline(always)]
    fn widen(src: &[Self], dst: &mut [f32]) {
        super::convert::widen_f16(src, dst);
    }
    #[inline(always)]
    fn narrow(src: &[f32], dst: &mut [Self]) {
        super::convert::narrow_f16(src, dst);
    }
    #[inline(always)]
    fn load8(src: &[Self; 8]) -> [f32; 8] {
        super::convert::load8_f16(src)
    }
    #[inline(always)]
    fn store8(v: &[f32; 8], dst: &mut [Self; 8]) {
        super::convert::store8_f16(v, dst);
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        super::convert::bf16_to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        super::convert::f32_to_bf16(v)
    }
}

/// Run a generic body with `$t` bound to the Rust type of a [`DType`] value.
///
/// ```
/// use dgs::dispatch_dtype;
/// use dgs::surgery::{DType, Element};
/// fn width<T: Element>() -> usize { std::mem::size_of::<T>() }
/// let d = DType::BF16;
/// assert_eq!(dispatch_dtype!(d, T => width::<T>()), 2);
/// ```
#[macro_export]
macro_rules! dispatch_dtype {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            $crate::surgery::DType::F32 => {
                type $t = f32;
                $body
            }
            $crate::surgery::DType::F16 => {
                type $t = $crate::half::f16;
                $body
            }
            $crate::surgery::DType::BF16 => {
                type $t = $crate::half::bf16;
                $body
            }
        }
    };
}
