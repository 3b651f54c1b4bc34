//! CLIP in candle with LoRA on the vision tower's q, k, v projections, loading the Hugging Face
//! weight layout (`vision_model.*`, `text_model.*`, `visual_projection`, `text_projection`).
//!
//! The frozen base weights are held once: the teacher is the student with the adapters off
//! ([`Mode::Frozen`]). Adapters live in their own `VarMap`, so only they (and the heads) train.
//!
//! Captions are tokenised with the folder's `tokenizer.json` ([`ClipTokenizer`]).

mod config;
mod encoder;
mod export;
mod layer;
mod layer_ops;
mod lora;
mod model;
pub mod openai;
pub mod peft;
pub(crate) mod staged;
mod tokenizer;
mod towers;
mod weights;

pub use config::{Activation, ClipConfig, TextConfig, TowerConfig, VisionConfig};
pub use export::export_merged;
pub use lora::{DropoutKey, LoraConfig, LoraLinear, LoraScaling, Mode};
pub use model::{Clip, LoadError};
pub use tokenizer::{ClipTokenizer, model_files, tiny_tokenizer_json, tokenizer_path};
pub use weights::{ByteCount, Counted, Fill, SeededWeights, write_random_folder};
