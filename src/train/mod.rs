//! Training: the stage-2 DGS loss with the surgical backward, Adam, the forgetting metric.
//!
//! [`Detector`] holds the model and its heads; [`Stage1Trainer`] (linear probe) and
//! [`Stage2Trainer`] (the DGS step and its ablations, with dynamic loss scaling for f16) run
//! steps and epochs over any batch iterator; [`checkpoint`] saves and restores exactly.

mod adam;
mod adam_cpu;
#[cfg(feature = "cuda")]
mod adam_cuda;
pub mod checkpoint;
mod detector;
mod epoch;
mod heads;
mod loss;
mod scaler;
mod stage1;
mod stage2;

pub use adam::{Adam, AdamConfig};
pub use detector::{Detector, ParamBytes, Stage};
pub use epoch::{EpochSummary, OwnedBatch};
pub use heads::Head;
pub use loss::{bce_logit_grad, bce_with_logits};
pub use scaler::{LossScaler, ScaleDecision};
pub use stage1::{Stage1Trainer, frozen_features};
pub use stage2::{
    Batch, Stage2Config, Stage2Trainer, StepPhase, StepStats, SurgeryImpl, Variant, accuracy,
    forgetting, named_vars, stage2_loss,
};
