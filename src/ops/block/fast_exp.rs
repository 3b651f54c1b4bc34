//! `eˣ` in f32 without a library call, so that loops over slices of it vectorise (the layer's
//! activation and softmax spend most of their time in `exp`). Cephes' `expf`: `x = n·ln 2 + r`
//! with `|r| ≤ ln 2 / 2`, a degree-7 polynomial for `eʳ`, `2ⁿ` built in the exponent bits;
//! within 2 ulp of the correctly rounded value for `x` in `[−87.3, 88.3]`, which the argument is
//! clamped to (beyond it `eˣ` is below f32's normal range or near its largest value).

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` split so that `n · LN2_HI` is exact for the `n` that occur.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// `1.5 · 2²³`: adding it rounds to an integer held in the low mantissa bits.
const ROUNDER: f32 = 12_582_912.0;
const LOWEST: f32 = -87.3;
const HIGHEST: f32 = 88.3;

#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(LOWEST, HIGHEST);
    let shifted = x * LOG2E + ROUNDER;
    let n = shifted - ROUNDER;
    let n_int = shifted.to_bits().wrapping_sub(ROUNDER.to_bits()) as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    er * f32::from_bits(((n_int + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    #[test]
    fn within_two_ulp_of_f64() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let got = f64::from(super::exp(x));
            let want = f64::from(x).exp();
            let w = want as f32;
            let ulp = f64::from(f32::from_bits(w.to_bits() + 1) - w);
            worst = worst.max((got - want).abs() / ulp);
            x += 0.001_37;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(super::exp(-1000.0), super::exp(-87.3));
        assert!(super::exp(0.0) == 1.0);
    }
}
