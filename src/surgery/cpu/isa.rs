//! Runtime choice of instruction set for the hot loops.
//!
//! The crate is built for the baseline x86-64 target, so binaries run anywhere; the loops are
//! compiled a second time with AVX2 + FMA + F16C enabled and that copy is used when the CPU has
//! them. Both copies perform the same f32 operations in the same order (no fused multiply-add is
//! formed: Rust never contracts `a * b + c`), so results are bit-identical whichever runs.

#[inline(always)]
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `multiversion!(fn name<T: Element>(args…) -> Ret => body);` defines `name`, which runs the
/// `#[inline(always)]` generic function `body` compiled for AVX2 when the CPU has it.
macro_rules! multiversion {
    ($vis:vis fn $name:ident<$t:ident: Element>($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty => $body:ident) => {
        $vis fn $name<$t: Element>($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma,f16c")]
                fn avx2<$t: Element>($($arg: $ty),*) -> $ret {
                    $body::<$t>($($arg),*)
                }
                if $crate::surgery::cpu::isa::has_avx2() {
                    // SAFETY: the CPU supports AVX2, FMA and F16C (checked on this line).
                    return unsafe { avx2::<$t>($($arg),*) };
                }
            }
            $body::<$t>($($arg),*)
        }
    };
}

pub(crate) use multiversion;
