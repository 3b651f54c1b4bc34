//! Eight f32 lanes as two SSE2 registers, SSE2 being part of every x86-64 CPU (no detection
//! needed); a plain array elsewhere. The compiler's own vectoriser splits the kernels' lane loops
//! into 2-wide pieces with shuffles, so the hot loops state their vectors explicitly.
//!
//! Every operation is lane-wise and rounds exactly like the scalar one (multiply and add stay
//! separate), so results do not depend on which implementation runs.

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::{
        __m128, _mm_add_ps, _mm_andnot_ps, _mm_cmpgt_ps, _mm_cmplt_ps, _mm_loadu_ps, _mm_mul_ps,
        _mm_set1_ps, _mm_setzero_ps, _mm_storeu_ps, _mm_sub_ps,
    };

    #[derive(Clone, Copy)]
    pub struct F32x8(__m128, __m128);

    // SAFETY (all blocks below): SSE2 is part of the x86-64 baseline, so these instructions
    // exist on every CPU this code runs on; loads and stores use 8-element arrays (32 bytes) with
    // unaligned access.
    impl F32x8 {
        #[inline(always)]
        pub fn splat(v: f32) -> Self {
            unsafe { Self(_mm_set1_ps(v), _mm_set1_ps(v)) }
        }
        #[inline(always)]
        pub fn load(a: &[f32; 8]) -> Self {
            unsafe { Self(_mm_loadu_ps(a.as_ptr()), _mm_loadu_ps(a.as_ptr().add(4))) }
        }
        #[inline(always)]
        pub fn store(self, a: &mut [f32; 8]) {
            unsafe {
                _mm_storeu_ps(a.as_mut_ptr(), self.0);
                _mm_storeu_ps(a.as_mut_ptr().add(4), self.1);
            }
        }
        #[inline(always)]
        pub fn add(self, o: Self) -> Self {
            unsafe { Self(_mm_add_ps(self.0, o.0), _mm_add_ps(self.1, o.1)) }
        }
        #[inline(always)]
        pub fn sub(self, o: Self) -> Self {
            unsafe { Self(_mm_sub_ps(self.0, o.0), _mm_sub_ps(self.1, o.1)) }
        }
        #[inline(always)]
        pub fn mul(self, o: Self) -> Self {
            unsafe { Self(_mm_mul_ps(self.0, o.0), _mm_mul_ps(self.1, o.1)) }
        }
        /// `v < 0 ? 0 : v` (NaN and −0.0 kept, as [`relu`](crate::surgery::transform::relu)).
        #[inline(always)]
        pub fn relu(self) -> Self {
            unsafe {
                let z = _mm_setzero_ps();
                Self(
                    _mm_andnot_ps(_mm_cmplt_ps(self.0, z), self.0),
                    _mm_andnot_ps(_mm_cmplt_ps(self.1, z), self.1),
                )
            }
        }
        /// `v > 0 ? 0 : v` (NaN kept, as [`negative_part`](crate::surgery::transform::negative_part)).
        #[inline(always)]
        pub fn negative_part(self) -> Self {
            unsafe {
                let z = _mm_setzero_ps();
                Self(
                    _mm_andnot_ps(_mm_cmpgt_ps(self.0, z), self.0),
                    _mm_andnot_ps(_mm_cmpgt_ps(self.1, z), self.1),
                )
            }
        }
        #[inline(always)]
        pub fn to_array(self) -> [f32; 8] {
            let mut a = [0.0; 8];
            self.store(&mut a);
            a
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use crate::surgery::transform::{negative_part, relu};

    #[derive(Clone, Copy)]
    pub struct F32x8([f32; 8]);

    impl F32x8 {
        #[inline(always)]
        pub fn splat(v: f32) -> Self {
            Self([v; 8])
        }
        #[inline(always)]
        pub fn load(a: &[f32; 8]) -> Self {
            Self(*a)
        }
        #[inline(always)]
        pub fn store(self, a: &mut [f32; 8]) {
            *a = self.0;
        }
        #[inline(always)]
        pub fn add(self, o: Self) -> Self {
            Self(std::array::from_fn(|l| self.0[l] + o.0[l]))
        }
        #[inline(always)]
        pub fn sub(self, o: Self) -> Self {
            Self(std::array::from_fn(|l| self.0[l] - o.0[l]))
        }
        #[inline(always)]
        pub fn mul(self, o: Self) -> Self {
            Self(std::array::from_fn(|l| self.0[l] * o.0[l]))
        }
        #[inline(always)]
        pub fn relu(self) -> Self {
            Self(self.0.map(relu))
        }
        #[inline(always)]
        pub fn negative_part(self) -> Self {
            Self(self.0.map(negative_part))
        }
        #[inline(always)]
        pub fn to_array(self) -> [f32; 8] {
            self.0
        }
    }
}

pub use imp::F32x8;
