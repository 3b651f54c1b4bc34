//! Training: the stage-2 DGS loss with the surgical backward, Adam, the forgetting metric.
//!
//! Status: stage 1 (linear probe) and stage 2 (the DGS step and its ablations) as steps, Adam with
//! savable state, checkpoints. The epoch loops over data sets, f16/bf16 compute with loss
//! scaling, and the CLI come with the data and training issues.

mod adam;
pub mod checkpoint;
mod heads;
mod loss;
mod stage1;
mod stage2;

pub use adam::{Adam, AdamConfig};
pub use heads::Head;
pub use loss::{bce_logit_grad, bce_with_logits};
pub use stage1::{Stage1Trainer, frozen_features};
pub use stage2::{
    Batch, Stage2Config, Stage2Trainer, StepStats, Variant, accuracy, forgetting, named_vars,
    stage2_loss,
};
