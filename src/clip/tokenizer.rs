//! Captions to token ids with a Hugging Face `tokenizer.json` (the one shipped with
//! openai/clip-vit-*), padded with the end token and cut to the model's positions.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::model::LoadError;

pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
    max_len: usize,
    eos: u32,
}

impl ClipTokenizer {
    /// `max_len` is the text tower's `max_position_embeddings`; `eos` its end token, also used
    /// for padding (as the openai uploads do).
    pub fn from_file(path: &Path, max_len: usize, eos: u32) -> Result<Self, LoadError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| LoadError::Config {
            path: path.to_path_buf(),
            message: format!("not a usable tokenizer: {e}"),
        })?;
        Ok(Self {
            inner,
            max_len,
            eos,
        })
    }

    /// `[B, T]` u32 ids, `T` the longest caption (at most `max_len`). A caption cut short keeps
    /// its end token in the last position, so pooling still finds it.
    pub fn encode_batch(&self, captions: &[&str], device: &Device) -> candle_core::Result<Tensor> {
        let mut rows = Vec::with_capacity(captions.len());
        for c in captions {
            let enc = self
                .inner
                .encode(*c, true)
                .map_err(|e| candle_core::Error::Msg(format!("tokenizing {c:?}: {e}")))?;
            let mut ids = enc.get_ids().to_vec();
            if ids.len() > self.max_len {
                ids.truncate(self.max_len);
                ids[self.max_len - 1] = self.eos;
            }
            rows.push(ids);
        }
        let t = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let flat: Vec<u32> = rows
            .iter()
            .flat_map(|r| {
                r.iter()
                    .copied()
                    .chain(std::iter::repeat_n(self.eos, t - r.len()))
            })
            .collect();
        Tensor::from_vec(flat, (captions.len(), t), device)
    }
}

/// A minimal CLIP-style `tokenizer.json`: lower-casing, whitespace words from `words`, unknown
/// words to id 0, `<|startoftext|>` = `eos − 1` and `<|endoftext|>` = `eos` around each caption.
/// For test models and the demo, which have no downloaded tokenizer.
pub fn tiny_tokenizer_json(words: &[&str], eos: u32) -> serde_json::Value {
    let (bos_tok, eos_tok) = ("<|startoftext|>", "<|endoftext|>");
    let mut vocab = serde_json::Map::new();
    vocab.insert("[UNK]".into(), 0.into());
    for (i, w) in words.iter().enumerate() {
        vocab.insert(w.to_lowercase(), (i as u32 + 1).into());
    }
    vocab.insert(bos_tok.into(), (eos - 1).into());
    vocab.insert(eos_tok.into(), eos.into());
    let added = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": true})
    };
    let special = |id: &str| serde_json::json!({"SpecialToken": {"id": id, "type_id": 0}});
    let seq =
        |id: &str, type_id: u32| serde_json::json!({"Sequence": {"id": id, "type_id": type_id}});
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [added(eos - 1, bos_tok), added(eos, eos_tok)],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special(bos_tok), seq("A", 0), special(eos_tok)],
            "pair": [special(bos_tok), seq("A", 0), seq("B", 1), special(eos_tok)],
            "special_tokens": {
                bos_tok: {"id": bos_tok, "ids": [eos - 1], "tokens": [bos_tok]},
                eos_tok: {"id": eos_tok, "ids": [eos], "tokens": [eos_tok]}
            }
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    })
}

/// Where [`ClipTokenizer::from_file`] looks inside a model folder.
pub fn tokenizer_path(dir: &Path) -> PathBuf {
    dir.join("tokenizer.json")
}

/// The files of a model folder (`config.json`, `model.safetensors`, `tokenizer.json`): what a
/// command reads from it, or writes into it.
pub fn model_files(dir: &Path) -> [PathBuf; 3] {
    [
        dir.join("config.json"),
        dir.join("model.safetensors"),
        tokenizer_path(dir),
    ]
}
