//! The MLP activations CLIP configs name, with their derivatives (the layer's backward needs
//! `act'(h)` at the saved pre-activation).

use serde::{Deserialize, Serialize};

/// The activations Hugging Face CLIP configs name; any other `hidden_act` is an error when the
/// config is read (serde lists these).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// `x · σ(1.702 x)`: OpenAI's CLIP (and the default of Hugging Face's `CLIPConfig`).
    #[default]
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// `x · Φ(x)` with the exact normal CDF (erf).
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation of GELU.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluTanh,
    #[serde(rename = "relu")]
    Relu,
}

use super::fast_exp::exp;

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_TANH_CUBIC: f32 = 0.044_715;

/// The activation and its derivative at `x`.
#[inline(always)]
pub fn activate(act: Activation, x: f32) -> (f32, f32) {
    match act {
        Activation::QuickGelu => {
            let s = sigmoid(1.702 * x);
            (x * s, s + 1.702 * x * s * (1.0 - s))
        }
        Activation::Gelu => {
            let cdf = 0.5 * (1.0 + candle_core::cpu::erf::erf_f32(x / std::f32::consts::SQRT_2));
            let pdf = exp(-0.5 * x * x) / (2.0 * std::f32::consts::PI).sqrt();
            (x * cdf, cdf + x * pdf)
        }
        Activation::GeluTanh => {
            let u = SQRT_2_OVER_PI * (x + GELU_TANH_CUBIC * x * x * x);
            let t = u.tanh();
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_CUBIC * x * x);
            (
                0.5 * x * (1.0 + t),
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du,
            )
        }
        Activation::Relu => (x.max(0.0), if x > 0.0 { 1.0 } else { 0.0 }),
    }
}

/// `out = act(h)` (`want_derivative` false) or `out ← out ⊙ act'(h)` (true), over a chunk.
pub fn apply(act: Activation, h: &[f32], out: &mut [f32], want_derivative: bool) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above), all `apply_avx2` requires.
        unsafe { apply_avx2(act, h, out, want_derivative) };
        return;
    }
    apply_body(act, h, out, want_derivative);
}

/// [`apply_body`] compiled for AVX2: eight lanes instead of SSE2's four.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn apply_avx2(act: Activation, h: &[f32], out: &mut [f32], want_derivative: bool) {
    apply_body(act, h, out, want_derivative);
}

/// One loop per activation and direction (the match outside the loops), so each vectorises.
#[inline(always)]
fn apply_body(act: Activation, h: &[f32], out: &mut [f32], want_derivative: bool) {
    macro_rules! each {
        ($a:expr) => {
            match want_derivative {
                false => out
                    .iter_mut()
                    .zip(h)
                    .for_each(|(o, h)| *o = activate($a, *h).0),
                true => out
                    .iter_mut()
                    .zip(h)
                    .for_each(|(o, h)| *o *= activate($a, *h).1),
            }
        };
    }
    match act {
        Activation::QuickGelu => each!(Activation::QuickGelu),
        Activation::Gelu => each!(Activation::Gelu),
        Activation::GeluTanh => each!(Activation::GeluTanh),
        Activation::Relu => each!(Activation::Relu),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each activation's derivative against a central difference in f64-ish precision.
    #[test]
    fn activation_derivatives() {
        for act in [
            Activation::QuickGelu,
            Activation::Gelu,
            Activation::GeluTanh,
            Activation::Relu,
        ] {
            for x in [-3.1f32, -0.7, -0.01, 0.3, 1.9, 4.2] {
                let h = 1e-3;
                let fd = (activate(act, x + h).0 - activate(act, x - h).0) / (2.0 * h);
                let d = activate(act, x).1;
                assert!((fd - d).abs() < 2e-3, "{act:?} at {x}: {d} vs {fd}");
            }
        }
    }
}
