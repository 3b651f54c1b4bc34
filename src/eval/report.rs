//! An evaluation table: one row per subset (and method), a mean row, printed as text, JSON and
//! Markdown.

use serde::{Deserialize, Serialize};

use super::metrics::SubsetMetrics;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportRow {
    /// The model or method evaluated (empty for a single-model report).
    pub method: String,
    pub subset: String,
    pub metrics: SubsetMetrics,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub rows: Vec<ReportRow>,
    /// Files that could not be evaluated, `path: reason`.
    pub skipped: Vec<String>,
    /// What the reader must know to read the table (e.g. a subset with one class).
    #[serde(default)]
    pub warnings: Vec<String>,
}

fn pct(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{:.1}", 100.0 * v))
}

impl Report {
    pub fn methods(&self) -> Vec<String> {
        let mut m: Vec<String> = Vec::new();
        for r in &self.rows {
            if !m.contains(&r.method) {
                m.push(r.method.clone());
            }
        }
        m
    }

    /// The mean over subsets of each metric, for `method`.
    pub fn mean(&self, method: &str) -> Option<SubsetMetrics> {
        let rows: Vec<&SubsetMetrics> = self
            .rows
            .iter()
            .filter(|r| r.method == method)
            .map(|r| &r.metrics)
            .collect();
        if rows.is_empty() {
            return None;
        }
        let n = rows.len() as f64;
        let mean_opt = |f: fn(&SubsetMetrics) -> Option<f64>| {
            let v: Vec<f64> = rows.iter().filter_map(|m| f(m)).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        Some(SubsetMetrics {
            n_real: rows.iter().map(|m| m.n_real).sum(),
            n_fake: rows.iter().map(|m| m.n_fake).sum(),
            accuracy: rows.iter().map(|m| m.accuracy).sum::<f64>() / n,
            average_precision: mean_opt(|m| m.average_precision),
            real_accuracy: mean_opt(|m| m.real_accuracy),
            fake_accuracy: mean_opt(|m| m.fake_accuracy),
        })
    }

    fn table_rows(&self) -> Vec<[String; 7]> {
        let mut out = Vec::new();
        for method in self.methods() {
            let rows = self.rows.iter().filter(|r| r.method == method);
            let mean = self.mean(&method).map(|m| ReportRow {
                method: method.clone(),
                subset: "mean".into(),
                metrics: m,
            });
            for r in rows.chain(mean.iter()) {
                let m = &r.metrics;
                out.push([
                    r.method.clone(),
                    r.subset.clone(),
                    format!("{}/{}", m.n_real, m.n_fake),
                    pct(Some(m.accuracy)),
                    pct(m.average_precision),
                    pct(m.real_accuracy),
                    pct(m.fake_accuracy),
                ]);
            }
        }
        out
    }

    const HEADER: [&'static str; 7] = [
        "method",
        "subset",
        "real/fake",
        "acc",
        "AP",
        "r_acc",
        "f_acc",
    ];

    /// A fixed-width text table (percentages).
    pub fn to_text(&self) -> String {
        let rows = self.table_rows();
        let mut width = Self::HEADER.map(|h| h.chars().count());
        for r in &rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: Vec<String>| {
            cells
                .iter()
                .zip(width)
                .enumerate()
                .map(|(i, (c, w))| match i < 2 {
                    true => format!("{c:<w$}"),
                    false => format!("{c:>w$}"),
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        let mut s = line(Self::HEADER.iter().map(|h| h.to_string()).collect()) + "\n";
        for r in rows {
            s += &line(r.to_vec());
            s.push('\n');
        }
        s
    }

    pub fn to_markdown(&self) -> String {
        let mut s = format!("| {} |\n", Self::HEADER.join(" | "));
        s += &format!("|{}\n", "---|".repeat(Self::HEADER.len()));
        for r in self.table_rows() {
            s += &format!("| {} |\n", r.join(" | "));
        }
        s
    }

    /// Rows, means per method and skipped files.
    pub fn to_json(&self) -> serde_json::Value {
        let means: serde_json::Map<String, serde_json::Value> = self
            .methods()
            .into_iter()
            .filter_map(|m| {
                let mean = self.mean(&m)?;
                Some((m, serde_json::to_value(mean).ok()?))
            })
            .collect();
        serde_json::json!({
            "rows": self.rows,
            "mean": means,
            "skipped": self.skipped,
            "warnings": self.warnings,
        })
    }
}
