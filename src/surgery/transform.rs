//! The elementwise transforms applied to an operand as it is loaded.
//!
//! NaN passes through both `Relu` and `NegativePart` (as in PyTorch's `relu` and `clamp`), so a
//! NaN in an input is never silently turned into a zero.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Transform {
    /// `v`
    #[default]
    Identity,
    /// `max(v, 0)`
    Relu,
    /// `min(v, 0)`
    NegativePart,
}

impl Transform {
    #[inline(always)]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Transform::Identity => v,
            Transform::Relu => relu(v),
            Transform::NegativePart => negative_part(v),
        }
    }

    #[inline(always)]
    pub fn apply_f64(self, v: f64) -> f64 {
        match self {
            Transform::Identity => v,
            Transform::Relu => {
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            }
            Transform::NegativePart => {
                if v > 0.0 {
                    0.0
                } else {
                    v
                }
            }
        }
    }

    /// `dst[i] = apply(src[i])`. Kept out of place on purpose: applied in place, the compiler
    /// turns "zero where negative" into a masked store, which is microcoded and several times
    /// slower on some CPUs.
    #[inline(always)]
    pub fn apply_into(self, src: &[f32], dst: &mut [f32]) {
        let pairs = dst.iter_mut().zip(src);
        match self {
            Transform::Identity => pairs.for_each(|(d, s)| *d = *s),
            Transform::Relu => pairs.for_each(|(d, s)| *d = relu(*s)),
            Transform::NegativePart => pairs.for_each(|(d, s)| *d = negative_part(*s)),
        }
    }
}

#[inline(always)]
pub fn relu(v: f32) -> f32 {
    if v < 0.0 { 0.0 } else { v }
}

#[inline(always)]
pub fn negative_part(v: f32) -> f32 {
    if v > 0.0 { 0.0 } else { v }
}
