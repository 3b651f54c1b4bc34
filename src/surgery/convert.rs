//! Block conversions between storage types and f32.
//!
//! f16 uses the F16C instructions when the CPU has them (checked once, cached by std), eight
//! values per instruction; bf16 is widened by a shift and narrowed by branch-free
//! round-to-nearest-even, both of which the compiler vectorises. Results are bit-identical to
//! `half`'s scalar conversions (NaN stays NaN).

use half::{bf16, f16};

#[inline(always)]
pub fn bf16_to_f32(v: bf16) -> f32 {
    f32::from_bits(u32::from(v.to_bits()) << 16)
}

/// Round to nearest even; NaN becomes a quiet NaN of the same sign (as `half` does).
#[inline(always)]
pub fn f32_to_bf16(v: f32) -> bf16 {
    let x = v.to_bits();
    let rounded = x.wrapping_add(0x7FFF + ((x >> 16) & 1)) >> 16;
    let quiet_nan = (x >> 16) | 0x0040;
    let is_nan = (x & 0x7FFF_FFFF) > 0x7F80_0000;
    bf16::from_bits(if is_nan { quiet_nan } else { rounded } as u16)
}

#[inline(always)]
fn has_f16c() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[inline(always)]
pub fn widen_f16(src: &[f16], dst: &mut [f32]) {
    let dst = &mut dst[..src.len()];
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: the CPU supports F16C (checked just above); lengths are equal.
        unsafe { x86::widen_f16(src, dst) };
        return;
    }
    dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.to_f32());
}

#[inline(always)]
pub fn narrow_f16(src: &[f32], dst: &mut [f16]) {
    let src = &src[..dst.len()];
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: the CPU supports F16C (checked just above); lengths are equal.
        unsafe { x86::narrow_f16(src, dst) };
        return;
    }
    dst.iter_mut()
        .zip(src)
        .for_each(|(d, s)| *d = f16::from_f32(*s));
}

#[inline(always)]
pub fn load8_f16(src: &[f16; 8]) -> [f32; 8] {
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: the CPU supports F16C (checked just above).
        return unsafe { x86::load8_f16(src) };
    }
    src.map(f16::to_f32)
}

#[inline(always)]
pub fn store8_f16(v: &[f32; 8], dst: &mut [f16; 8]) {
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: the CPU supports F16C (checked just above).
        unsafe { x86::store8_f16(v, dst) };
        return;
    }
    *dst = v.map(f16::from_f32);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::{
        __m128i, _MM_FROUND_TO_NEAREST_INT, _mm_loadu_si128, _mm_storeu_si128, _mm256_cvtph_ps,
        _mm256_cvtps_ph, _mm256_loadu_ps, _mm256_storeu_ps,
    };

    /// The caller checked F16C.
    #[target_feature(enable = "avx,f16c")]
    #[inline]
    pub unsafe fn load8_f16(src: &[f16; 8]) -> [f32; 8] {
        let mut out = [0.0f32; 8];
        // SAFETY: 8 f16 are 16 readable bytes and 8 f32 are 32 writable bytes; unaligned access.
        unsafe {
            let v = _mm_loadu_si128(src.as_ptr().cast::<__m128i>());
            _mm256_storeu_ps(out.as_mut_ptr(), _mm256_cvtph_ps(v));
        }
        out
    }

    /// The caller checked F16C.
    #[target_feature(enable = "avx,f16c")]
    #[inline]
    pub unsafe fn store8_f16(v: &[f32; 8], dst: &mut [f16; 8]) {
        // SAFETY: 8 f32 are 32 readable bytes and 8 f16 are 16 writable bytes; unaligned access.
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(v.as_ptr()));
            _mm_storeu_si128(dst.as_mut_ptr().cast::<__m128i>(), h);
        }
    }

    /// `src.len() == dst.len()`; the caller checked F16C.
    #[target_feature(enable = "avx,f16c")]
    #[inline]
    pub unsafe fn widen_f16(src: &[f16], dst: &mut [f32]) {
        debug_assert_eq!(src.len(), dst.len());
        let mut s = src.chunks_exact(8);
        let mut d = dst.chunks_exact_mut(8);
        for (sc, dc) in (&mut s).zip(&mut d) {
            // SAFETY: each chunk holds exactly 8 f16 (16 bytes) and 8 f32 (32 bytes); unaligned
            // loads and stores are used.
            unsafe {
                let v = _mm_loadu_si128(sc.as_ptr().cast::<__m128i>());
                _mm256_storeu_ps(dc.as_mut_ptr(), _mm256_cvtph_ps(v));
            }
        }
        for (dv, sv) in d.into_remainder().iter_mut().zip(s.remainder()) {
            *dv = sv.to_f32();
        }
    }

    /// `src.len() == dst.len()`; the caller checked F16C.
    #[target_feature(enable = "avx,f16c")]
    #[inline]
    pub unsafe fn narrow_f16(src: &[f32], dst: &mut [f16]) {
        debug_assert_eq!(src.len(), dst.len());
        let mut s = src.chunks_exact(8);
        let mut d = dst.chunks_exact_mut(8);
        for (sc, dc) in (&mut s).zip(&mut d) {
            // SAFETY: each chunk holds exactly 8 f32 and 8 f16; unaligned loads and stores.
            unsafe {
                let v = _mm256_loadu_ps(sc.as_ptr());
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                _mm_storeu_si128(dc.as_mut_ptr().cast::<__m128i>(), h);
            }
        }
        for (dv, sv) in d.into_remainder().iter_mut().zip(s.remainder()) {
            *dv = f16::from_f32(*sv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::surgery::rng::SplitMix64;

    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn f16_conversions_match_half_for_every_pattern() {
        let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        let mut wide = vec![0.0f32; all.len()];
        widen_f16(&all, &mut wide);
        for (h, w) in all.iter().zip(&wide) {
            assert!(same(h.to_f32(), *w), "{:#06x}", h.to_bits());
            let mut g = [0.0f32; 8];
            g[0] = *w;
            let mut back = [f16::ZERO; 8];
            store8_f16(&g, &mut back);
            assert!(same(back[0].to_f32(), h.to_f32()));
        }
        let mut rng = SplitMix64::new(1);
        let src: Vec<f32> = (0..100_003)
            .map(|_| f32::from_bits(rng.next_u64() as u32))
            .collect();
        let mut out = vec![f16::ZERO; src.len()];
        narrow_f16(&src, &mut out);
        for (s, o) in src.iter().zip(&out) {
            assert!(same(f16::from_f32(*s).to_f32(), o.to_f32()), "{s:e}");
        }
        let g: [f16; 8] = std::array::from_fn(|i| all[i * 8191]);
        let w = load8_f16(&g);
        assert!(g.iter().zip(&w).all(|(h, w)| same(h.to_f32(), *w)));
    }

    #[test]
    fn bf16_conversions_match_half() {
        let mut rng = SplitMix64::new(2);
        let mut src: Vec<f32> = (0..200_000)
            .map(|_| f32::from_bits(rng.next_u64() as u32))
            .collect();
        src.extend([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MAX,
            f32::MIN_POSITIVE,
        ]);
        for s in src {
            let ours = f32_to_bf16(s);
            let theirs = bf16::from_f32(s);
            assert!(
                ours.to_bits() == theirs.to_bits() || (ours.is_nan() && theirs.is_nan()),
                "{s:e}: {:#06x} vs {:#06x}",
                ours.to_bits(),
                theirs.to_bits()
            );
            assert!(same(bf16_to_f32(ours), ours.to_f32()));
        }
    }
}
