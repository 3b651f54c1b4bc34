//! CLIP in candle with LoRA on the vision tower's q, k, v projections, loading the Hugging Face
//! weight layout (`vision_model.*`, `text_model.*`, `visual_projection`, `text_projection`).
//!
//! The frozen base weights are held once: the teacher is the student with the adapters off
//! ([`Mode::Frozen`]). Adapters live in their own `VarMap`, so only they (and the heads) train.
//!
//! Status: the model, LoRA and weight loading. Tokenisation (`tokenizer.json`), the training
//! stages and checkpoints come next (see the training issue).

mod config;
mod encoder;
mod lora;
mod model;
mod towers;

pub use config::{ClipConfig, TextConfig, TowerConfig, VisionConfig};
pub use lora::{LoraConfig, LoraLinear, Mode};
pub use model::{Clip, LoadError};
