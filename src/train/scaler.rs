//! Dynamic loss scaling for f16 compute (the rule of PyTorch's `GradScaler`): the loss is
//! multiplied by `scale` before the backward pass so small activation gradients survive f16, and
//! the parameter gradients are divided by it before the update. A step whose gradients overflow
//! is skipped and the scale halved; after `growth_interval` good steps in a row it doubles.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    pub scale: f64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: u32,
    /// Good steps since the last change of scale.
    pub good_steps: u32,
    /// Skipped steps in a row; training stops at [`LossScaler::MAX_SKIPS_IN_A_ROW`], because by
    /// then the scale has fallen by 2³² and the overflow is not a scaling problem.
    pub skipped_in_a_row: u32,
}

impl Default for LossScaler {
    /// PyTorch's defaults: 2¹⁶, ×2 every 2000 good steps, ×0.5 on overflow.
    fn default() -> Self {
        Self {
            scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            good_steps: 0,
            skipped_in_a_row: 0,
        }
    }
}

/// What to do with a step's gradients.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScaleDecision {
    /// Apply them (after multiplying by this factor, `1/scale`).
    Apply(f64),
    /// Skip the update; the scale has been lowered.
    Skip,
}

impl LossScaler {
    pub const MAX_SKIPS_IN_A_ROW: u32 = 32;

    /// Record whether this step's scaled gradients were all finite and say what to do. Errors
    /// when too many steps in a row overflowed.
    pub fn update(&mut self, finite: bool) -> Result<ScaleDecision, String> {
        let inv = 1.0 / self.scale;
        if finite {
            self.skipped_in_a_row = 0;
            self.good_steps += 1;
            if self.good_steps >= self.growth_interval {
                self.scale *= self.growth_factor;
                self.good_steps = 0;
            }
            return Ok(ScaleDecision::Apply(inv));
        }
        self.good_steps = 0;
        self.skipped_in_a_row += 1;
        self.scale *= self.backoff_factor;
        if self.skipped_in_a_row >= Self::MAX_SKIPS_IN_A_ROW {
            return Err(format!(
                "{} steps in a row had non-finite gradients (loss scale now {:e}); the model diverged",
                self.skipped_in_a_row, self.scale
            ));
        }
        Ok(ScaleDecision::Skip)
    }
}
