//! The official `lo,hi` range options (`--blur-sig`, `--jpg-qual`): two comma-separated values,
//! or one value for a fixed setting.

use std::str::FromStr;

fn parse_range<T: FromStr + PartialOrd + Copy>(s: &str) -> Result<(T, T), String> {
    let value = |v: &str| {
        v.trim()
            .parse::<T>()
            .map_err(|_| format!("`{v}` is not a number"))
    };
    let (lo, hi) = match s.split_once(',') {
        Some((lo, hi)) => (value(lo)?, value(hi)?),
        None => {
            let v = value(s)?;
            (v, v)
        }
    };
    match lo <= hi {
        true => Ok((lo, hi)),
        false => Err(format!("`{s}`: lo must not exceed hi")),
    }
}

/// Blur sigma, pixels: `lo,hi` or `sigma`, ≥ 0.
pub fn parse_sigma_range(s: &str) -> Result<(f64, f64), String> {
    let (lo, hi) = parse_range::<f64>(s)?;
    match lo >= 0.0 && hi.is_finite() {
        true => Ok((lo, hi)),
        false => Err(format!("`{s}`: sigma must be finite and ≥ 0")),
    }
}

/// JPEG quality: `lo,hi` or `q`, within 1..=100.
pub fn parse_quality_range(s: &str) -> Result<(u8, u8), String> {
    let (lo, hi) = parse_range::<u8>(s)?;
    match lo >= 1 && hi <= 100 {
        true => Ok((lo, hi)),
        false => Err(format!("`{s}`: quality must be within 1 to 100")),
    }
}
