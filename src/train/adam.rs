//! Adam with PyTorch's update rule and state that can be saved and restored exactly:
//! `p ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + eps)`.

use std::collections::BTreeMap;

use candle_core::{Result, Tensor, Var, backprop::GradStore};

use super::adam_cpu;
use crate::surgery::cpu::adam::{self as adam_update, AdamStep};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamConfig {
    /// The paper's: lr 1e-4, betas (0.9, 0.999).
    fn default() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Named parameters with their first and second moments.
pub struct Adam {
    pub cfg: AdamConfig,
    params: BTreeMap<String, Var>,
    m: BTreeMap<String, Tensor>,
    v: BTreeMap<String, Tensor>,
    step: u64,
}

impl Adam {
    pub fn new(params: BTreeMap<String, Var>, cfg: AdamConfig) -> Result<Self> {
        let zeros = |p: &Var| p.as_tensor().zeros_like();
        let m = params
            .iter()
            .map(|(k, p)| Ok((k.clone(), zeros(p)?)))
            .collect::<Result<_>>()?;
        let v = params
            .iter()
            .map(|(k, p)| Ok((k.clone(), zeros(p)?)))
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg,
            params,
            m,
            v,
            step: 0,
        })
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    pub fn params(&self) -> &BTreeMap<String, Var> {
        &self.params
    }

    /// One update from `grads`; parameters without a gradient keep their value and moments.
    /// A NaN or infinite gradient is an error naming the parameter, and nothing is updated.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        if let Some(name) = self.first_non_finite(grads)? {
            candle_core::bail!("the gradient of `{name}` is not finite; no parameter was updated");
        }
        self.step_scaled(grads, 1.0)
    }

    /// One update from `grads` multiplied by `grad_scale` (loss scaling's `1/scale`), with no
    /// finiteness check: call [`Adam::first_non_finite`] first.
    pub fn step_scaled(&mut self, grads: &GradStore, grad_scale: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let step_size = self.cfg.lr / (1.0 - b1.powi(t));
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let cpu = AdamStep {
            beta1: b1 as f32,
            beta2: b2 as f32,
            one_minus_beta1: (1.0 - b1) as f32,
            one_minus_beta2: (1.0 - b2) as f32,
            step_size: step_size as f32,
            bias2_sqrt: bc2_sqrt as f32,
            eps: self.cfg.eps as f32,
            grad_scale: grad_scale as f32,
        };
        // On CUDA, every f32 parameter in one launch; the loop below takes the rest.
        #[cfg(feature = "cuda")]
        let on_device =
            super::adam_cuda::update_all(&self.params, (&self.m, &self.v), grads, &cpu)?;
        #[cfg(not(feature = "cuda"))]
        let on_device = std::collections::BTreeSet::<String>::new();
        for (name, p) in &self.params {
            let Some(g) = grads.get(p.as_tensor()) else {
                continue;
            };
            if on_device.contains(name) {
                continue;
            }
            if adam_cpu::applies(p.as_tensor()) && g.dtype() == p.dtype() {
                let (m, v) = self.update_on_cpu(&cpu, name, p, g)?;
                self.m.insert(name.clone(), m);
                self.v.insert(name.clone(), v);
                continue;
            }
            let unscaled;
            let g = if grad_scale == 1.0 {
                g
            } else {
                unscaled = (g * grad_scale)?;
                &unscaled
            };
            let m = ((&self.m[name] * b1)? + (g * (1.0 - b1))?)?;
            let v = ((&self.v[name] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let denom = ((v.sqrt()? / bc2_sqrt)? + self.cfg.eps)?;
            p.set(&(p.as_tensor() - ((&m / denom)? * step_size)?)?)?;
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v);
        }
        Ok(())
    }

    /// [`adam_update::update`] on one parameter: sets it, returns its new moments.
    fn update_on_cpu(
        &self,
        s: &AdamStep,
        name: &str,
        p: &Var,
        g: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let mut values = adam_cpu::values(p.as_tensor())?;
        let mut m = adam_cpu::values(&self.m[name])?;
        let mut v = adam_cpu::values(&self.v[name])?;
        adam_update::update(s, &mut values, &adam_cpu::values(g)?, &mut m, &mut v);
        let shape = p.shape();
        p.set(&Tensor::from_vec(values, shape, p.device())?)?;
        Ok((
            Tensor::from_vec(m, shape, p.device())?,
            Tensor::from_vec(v, shape, p.device())?,
        ))
    }

    /// The first parameter (by name) whose gradient holds a NaN or an infinity. One
    /// device-to-host copy for all parameters (not one per parameter).
    pub fn first_non_finite(&self, grads: &GradStore) -> Result<Option<String>> {
        let mut names = Vec::new();
        let mut sums = Vec::new();
        for (name, p) in &self.params {
            if let Some(g) = grads.get(p.as_tensor()) {
                names.push(name);
                sums.push(
                    g.abs()?
                        .sum_all()?
                        .to_dtype(candle_core::DType::F32)?
                        .reshape(1)?,
                );
            }
        }
        if sums.is_empty() {
            return Ok(None);
        }
        let sums = Tensor::cat(&sums, 0)?.to_vec1::<f32>()?;
        Ok(names
            .into_iter()
            .zip(sums)
            .find(|(_, s)| !s.is_finite())
            .map(|(n, _)| n.clone()))
    }

    /// Moments as named tensors (`m/<name>`, `v/<name>`), for checkpoints.
    pub fn state(&self) -> impl Iterator<Item = (String, &Tensor)> {
        let m = self.m.iter().map(|(k, t)| (format!("m/{k}"), t));
        let v = self.v.iter().map(|(k, t)| (format!("v/{k}"), t));
        m.chain(v)
    }

    /// Restore moments and step from a checkpoint; every parameter must be present.
    pub fn restore(
        &mut self,
        state: &std::collections::HashMap<String, Tensor>,
        step: u64,
    ) -> Result<()> {
        for name in self.params.keys() {
            for (kind, dst) in [("m", &mut self.m), ("v", &mut self.v)] {
                let key = format!("{kind}/{name}");
                let t = state.get(&key).ok_or_else(|| {
                    candle_core::Error::Msg(format!("optimizer state `{key}` is missing"))
                })?;
                if t.shape() != self.params[name].shape() {
                    candle_core::bail!(
                        "optimizer state `{key}` has shape {:?}, the parameter {:?}",
                        t.shape(),
                        self.params[name].shape()
                    );
                }
                dst.insert(name.clone(), t.clone());
            }
        }
        self.step = step;
        Ok(())
    }
}
