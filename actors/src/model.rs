//! The scoring model: one versioned artifact bundling the Isolation Forest (anomaly), a
//! supervised logistic regression (fraud likelihood, trained with smartcore once labels
//! exist) and a calibrator that turns both into one fraud probability.
//!
//! ```text
//! features ─▶ vector (19 inputs) ─┬─▶ Isolation Forest ─▶ anomaly a ∈ [0,1] ──┐
//!                                 └─▶ logistic regression ─▶ logit s ─────────┴─▶ calibrator
//!                                                      p = σ(w₀ + w₁·a + w₂·s) = fraud probability
//! ```
//!
//! The calibrator is itself a logistic regression, fitted on out-of-fold supervised scores
//! (time blocks the regression was not trained on), so `p` is a calibrated probability
//! (Platt scaling / stacking) learnt from every label. Scoring one transaction allocates nothing: the forest walks flat
//! arrays and both regressions are dot products over fixed-size arrays.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use smartcore::{
    linalg::basic::{arrays::Array, matrix::DenseMatrix},
    linear::logistic_regression::{LogisticRegression, LogisticRegressionParameters},
};

use crate::{
    features::{Features, MODEL_INPUTS, MODEL_WIDTH},
    iforest::{self, IsolationForest},
};

/// Format version of the serialised [`Model`]; bump when the layout changes.
pub const MODEL_FORMAT: u32 = 1;

/// Time blocks the labelled rows are cut into for out-of-fold calibration.
pub const CALIBRATION_FOLDS: usize = 5;

/// Inputs of the calibrator when the model has a supervised part.
pub const CALIBRATOR_INPUTS: [&str; 2] = ["anomaly", "supervised_logit"];

/// Why a model could not be trained or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// Too few labelled rows, or only one class.
    #[error("not enough labels: {labelled} labelled rows, {fraud} fraud (need {need_rows} and {need_fraud})")]
    NotEnoughLabels {
        /// Labelled rows available.
        labelled: usize,
        /// Of which fraud.
        fraud: usize,
        /// Rows required.
        need_rows: usize,
        /// Fraud rows required.
        need_fraud: usize,
    },
    /// The forest refused the data.
    #[error("isolation forest: {0}")]
    Forest(#[from] iforest::ForestError),
    /// smartcore failed to fit.
    #[error("logistic regression: {0}")]
    Fit(String),
    /// The artifact is not one this build understands.
    #[error("unsupported model artifact: {0}")]
    Artifact(String),
}

/// A logistic regression over standardised inputs, stored as plain coefficients so scoring
/// is a dot product (fitted with smartcore's L-BFGS solver).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    /// Input names, in column order.
    pub inputs: Vec<String>,
    /// Mean of each input in the training data.
    pub means: Vec<f64>,
    /// Standard deviation of each input (1 where constant).
    pub scales: Vec<f64>,
    /// Coefficient of each standardised input.
    pub coefficients: Vec<f64>,
    /// Intercept.
    pub intercept: f64,
}

/// The logistic function.
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The log-odds of a probability, clamped away from ±∞.
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-9, 1.0 - 1e-9);
    (p / (1.0 - p)).ln()
}

impl Logistic {
    /// Fits on `rows` (one value per name in `inputs`) against `labels` with L2 penalty
    /// `alpha`. Needs both classes.
    pub fn fit(inputs: &[&str], rows: &[&[f64]], labels: &[bool], alpha: f64) -> Result<Self, ModelError> {
        let width = inputs.len();
        let n = rows.len();
        let fraud = labels.iter().filter(|l| **l).count();
        if n == 0 || fraud == 0 || fraud == n || labels.len() != n || rows.iter().any(|r| r.len() != width) {
            return Err(ModelError::NotEnoughLabels { labelled: n, fraud, need_rows: 2, need_fraud: 1 });
        }
        let mut means = vec![0.0; width];
        let mut scales = vec![0.0; width];
        for row in rows {
            for (m, v) in means.iter_mut().zip(row.iter()) {
                *m += v / n as f64;
            }
        }
        for row in rows {
            for ((s, v), m) in scales.iter_mut().zip(row.iter()).zip(&means) {
                *s += (v - m).powi(2) / n as f64;
            }
        }
        for s in &mut scales {
            *s = if *s > 1e-12 { s.sqrt() } else { 1.0 };
        }
        let standardised: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| r.iter().zip(&means).zip(&scales).map(|((v, m), s)| (v - m) / s).collect())
            .collect();
        let x = DenseMatrix::from_2d_vec(&standardised).map_err(|e| ModelError::Fit(e.to_string()))?;
        let y: Vec<u32> = labels.iter().map(|l| u32::from(*l)).collect();
        let fitted =
            LogisticRegression::fit(&x, &y, LogisticRegressionParameters::default().with_alpha(alpha))
                .map_err(|e| ModelError::Fit(e.to_string()))?;
        let coefficients = (0..width).map(|j| *fitted.coefficients().get((0, j))).collect();
        let intercept = *fitted.intercept().get((0, 0));
        Ok(Self {
            inputs: inputs.iter().map(|s| (*s).to_owned()).collect(),
            means,
            scales,
            coefficients,
            intercept,
        })
    }

    /// Log-odds of fraud for `row`.
    pub fn logit(&self, row: &[f64]) -> f64 {
        self.intercept + self.terms(row).sum::<f64>()
    }

    /// Each input's term in the log-odds (coefficient × standardised value).
    pub fn terms<'a>(&'a self, row: &'a [f64]) -> impl Iterator<Item = f64> + 'a {
        row.iter()
            .zip(&self.means)
            .zip(&self.scales)
            .zip(&self.coefficients)
            .map(|(((v, m), s), c)| c * (v - m) / s)
    }

    fn check(&self) -> Result<(), ModelError> {
        let w = self.inputs.len();
        if self.means.len() != w || self.scales.len() != w || self.coefficients.len() != w {
            return Err(ModelError::Artifact("logistic regression of inconsistent width".into()));
        }
        Ok(())
    }
}

/// A model version: what the scorer loads and what the `models` table stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// See [`MODEL_FORMAT`].
    pub format: u32,
    /// Version tag stored with every score it produces.
    pub version: String,
    /// When it was trained.
    pub created_at: DateTime<Utc>,
    /// Its inputs ([`MODEL_INPUTS`] at training time).
    pub inputs: Vec<String>,
    /// The anomaly detector.
    pub forest: IsolationForest,
    /// The supervised part, when labels allowed one.
    pub supervised: Option<Logistic>,
    /// Turns (anomaly, supervised logit) — or anomaly alone — into a fraud probability.
    pub calibrator: Logistic,
}

/// What the model says about one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelScore {
    /// Isolation Forest anomaly score in [0, 1].
    pub anomaly: f64,
    /// Supervised fraud probability, when the model has a supervised part.
    pub supervised: Option<f64>,
    /// Calibrated fraud probability combining both.
    pub probability: f64,
}

/// One example for training or evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The model input ([`Features::vector`]).
    pub x: [f64; MODEL_WIDTH],
    /// The label, if one is known.
    pub fraud: Option<bool>,
}

/// How a model is trained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FitParams {
    /// Isolation Forest parameters.
    pub forest: iforest::Params,
    /// L2 penalty of the supervised regression.
    pub alpha: f64,
    /// Labelled rows required for a supervised part.
    pub min_labels: usize,
    /// Fraud rows among them required.
    pub min_fraud: usize,
}

impl Default for FitParams {
    fn default() -> Self {
        Self { forest: iforest::Params::default(), alpha: 1.0, min_labels: 200, min_fraud: 20 }
    }
}

impl Model {
    /// Trains a new version on `rows` (in time order): the forest on every row, the
    /// regression on the labelled ones, and the calibrator on out-of-fold predictions —
    /// the labelled rows are cut into [`CALIBRATION_FOLDS`] consecutive time blocks, and each
    /// block's supervised logits come from a regression fitted without it — so the
    /// calibration is learnt on scores the regression did not train on, using every label.
    pub fn fit(version: &str, rows: &[Example], params: FitParams) -> Result<Self, ModelError> {
        let all: Vec<Vec<f64>> = rows.iter().map(|e| e.x.to_vec()).collect();
        let forest = IsolationForest::fit(version, &MODEL_INPUTS, &all, params.forest)?;
        let (x, y): (Vec<[f64; MODEL_WIDTH]>, Vec<bool>) =
            rows.iter().filter_map(|e| e.fraud.map(|f| (e.x, f))).unzip();
        let fraud = y.iter().filter(|l| **l).count();
        if y.len() < params.min_labels || fraud < params.min_fraud || fraud == y.len() {
            return Err(ModelError::NotEnoughLabels {
                labelled: y.len(),
                fraud,
                need_rows: params.min_labels,
                need_fraud: params.min_fraud,
            });
        }
        let refs: Vec<&[f64]> = x.iter().map(|r| r.as_slice()).collect();
        let mut stacked: Vec<[f64; 2]> = Vec::with_capacity(x.len());
        let mut stacked_y = Vec::with_capacity(x.len());
        let fold = x.len().div_ceil(CALIBRATION_FOLDS);
        for start in (0..x.len()).step_by(fold.max(1)) {
            let end = (start + fold).min(x.len());
            let (rest, rest_y): (Vec<&[f64]>, Vec<bool>) =
                (0..x.len()).filter(|i| !(start..end).contains(i)).map(|i| (refs[i], y[i])).unzip();
            // A block whose complement lacks a class cannot be predicted out of fold: skip it.
            let Ok(held_out) = Logistic::fit(&MODEL_INPUTS, &rest, &rest_y, params.alpha) else {
                continue;
            };
            for i in start..end {
                stacked.push([forest.score(&x[i])?, held_out.logit(&x[i])]);
                stacked_y.push(y[i]);
            }
        }
        let stacked_refs: Vec<&[f64]> = stacked.iter().map(|r| r.as_slice()).collect();
        let calibrator = Logistic::fit(&CALIBRATOR_INPUTS, &stacked_refs, &stacked_y, 1e-3)?;
        Ok(Self {
            format: MODEL_FORMAT,
            version: version.to_owned(),
            created_at: Utc::now(),
            inputs: MODEL_INPUTS.iter().map(|s| (*s).to_owned()).collect(),
            forest,
            supervised: Some(Logistic::fit(&MODEL_INPUTS, &refs, &y, params.alpha)?),
            calibrator,
        })
    }

    /// A copy with a fresh forest trained on `rows` (no labels needed), keeping the
    /// supervised part and the calibrator: how the anomaly detector follows live traffic
    /// between supervised retrainings.
    pub fn refit_forest(
        &self,
        version: &str,
        rows: &[Example],
        params: iforest::Params,
    ) -> Result<Self, ModelError> {
        let rows: Vec<Vec<f64>> = rows.iter().map(|e| e.x.to_vec()).collect();
        Ok(Self {
            version: version.to_owned(),
            created_at: Utc::now(),
            forest: IsolationForest::fit(version, &MODEL_INPUTS, &rows, params)?,
            ..self.clone()
        })
    }

    /// Checks an artifact loaded from storage before it is used.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.format != MODEL_FORMAT {
            return Err(ModelError::Artifact(format!(
                "format {} (this build reads {MODEL_FORMAT})",
                self.format
            )));
        }
        if self.inputs.iter().map(String::as_str).ne(MODEL_INPUTS)
            || self.forest.features.len() != MODEL_WIDTH
        {
            return Err(ModelError::Artifact("inputs differ from this build's features".into()));
        }
        if let Some(s) = &self.supervised {
            s.check()?;
            if s.inputs.len() != MODEL_WIDTH {
                return Err(ModelError::Artifact("supervised part of the wrong width".into()));
            }
        }
        self.calibrator.check()?;
        if self.calibrator.inputs.len() != 1 + usize::from(self.supervised.is_some()) {
            return Err(ModelError::Artifact("calibrator of the wrong width".into()));
        }
        Ok(())
    }

    /// Scores one feature vector and writes each input's share of the anomaly score into
    /// `contributions` (they sum to the anomaly score). Allocation-free.
    pub fn score(
        &self,
        features: &Features,
        contributions: &mut [f64; MODEL_WIDTH],
    ) -> Result<ModelScore, ModelError> {
        let x = features.vector();
        let anomaly = self.forest.explain(&x, contributions)?;
        for c in contributions.iter_mut() {
            *c *= anomaly;
        }
        let supervised_logit = self.supervised.as_ref().map(|s| s.logit(&x));
        let stacked = [anomaly, supervised_logit.unwrap_or(0.0)];
        let probability = sigmoid(self.calibrator.logit(&stacked[..self.calibrator.inputs.len()]));
        Ok(ModelScore { anomaly, supervised: supervised_logit.map(sigmoid), probability })
    }
}

/// Ranking quality of scores against labels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Labelled rows evaluated.
    pub rows: usize,
    /// Of which fraud.
    pub fraud: usize,
    /// Area under the ROC curve.
    pub auc_roc: f64,
    /// Average precision (area under the precision–recall curve).
    pub average_precision: f64,
    /// Share of fraud among the `k` highest scores.
    pub precision_at_k: f64,
    /// The `k` used (1 % of the rows, at least 10).
    pub k: usize,
    /// Mean squared error of the scores as probabilities (calibration; lower is better).
    pub brier: f64,
}

impl Metrics {
    /// Computes the metrics of `scores` against `labels` (same length).
    pub fn compute(scores: &[f64], labels: &[bool]) -> Self {
        let n = scores.len().min(labels.len());
        let fraud = labels[..n].iter().filter(|l| **l).count();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let k = (n / 100).max(10).min(n);
        let hits_at_k = order[..k].iter().filter(|&&i| labels[i]).count();
        // Σ (recall step) × precision over distinct score thresholds: tied scores form one
        // threshold, so the result does not depend on the order of ties.
        let (mut hits, mut ap, mut start) = (0usize, 0.0, 0usize);
        while start < n {
            let mut end = start;
            while end < n && scores[order[end]] == scores[order[start]] {
                end += 1;
            }
            let new = order[start..end].iter().filter(|&&i| labels[i]).count();
            hits += new;
            ap += new as f64 * hits as f64 / end as f64;
            start = end;
        }
        let brier = if n == 0 {
            0.0
        } else {
            (0..n).map(|i| (scores[i] - f64::from(u8::from(labels[i]))).powi(2)).sum::<f64>() / n as f64
        };
        Self {
            rows: n,
            fraud,
            auc_roc: iforest::roc_auc(&scores[..n], &labels[..n]),
            average_precision: if fraud == 0 { 0.0 } else { ap / fraud as f64 },
            precision_at_k: if k == 0 { 0.0 } else { hits_at_k as f64 / k as f64 },
            k,
            brier,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows where fraud has a larger first input and is rarer.
    fn examples(n: usize, seed: u64) -> Vec<Example> {
        let mut rng = iforest::Rng(seed);
        (0..n)
            .map(|i| {
                let fraud = i % 20 == 0;
                let mut x = [0.0; MODEL_WIDTH];
                for v in x.iter_mut() {
                    *v = rng.unit();
                }
                if fraud {
                    x[0] += 3.0 + rng.unit();
                    x[7] += 2.0;
                }
                Example { x, fraud: Some(fraud) }
            })
            .collect()
    }

    fn params() -> FitParams {
        FitParams {
            forest: iforest::Params { trees: 50, sample_size: 128, seed: 7 },
            alpha: 0.1,
            min_labels: 100,
            min_fraud: 5,
        }
    }

    #[test]
    fn a_model_separates_and_calibrates() {
        let model = Model::fit("m1", &examples(3000, 1), params()).unwrap_or_else(|e| panic!("{e}"));
        model.validate().unwrap_or_else(|e| panic!("{e}"));
        let test = examples(1000, 3);
        let mut c = [0.0; MODEL_WIDTH];
        let scores: Vec<f64> = test
            .iter()
            .map(|e| {
                let x = e.x;
                let anomaly = model.forest.explain(&x, &mut c).unwrap_or(0.0);
                let s = model.supervised.as_ref().map_or(0.0, |s| s.logit(&x));
                sigmoid(model.calibrator.logit(&[anomaly, s]))
            })
            .collect();
        let labels: Vec<bool> = test.iter().map(|e| e.fraud == Some(true)).collect();
        let m = Metrics::compute(&scores, &labels);
        assert!(m.auc_roc > 0.95, "{m:?}");
        // Calibrated: the mean predicted probability is close to the fraud rate (5 %).
        let mean = scores.iter().sum::<f64>() / scores.len() as f64;
        assert!((mean - 0.05).abs() < 0.03, "mean probability {mean}");
    }

    #[test]
    fn too_few_labels_is_an_error() {
        let mut few = examples(300, 1);
        for e in &mut few {
            e.fraud = Some(false);
        }
        assert!(matches!(Model::fit("m", &few, params()), Err(ModelError::NotEnoughLabels { fraud: 0, .. })));
    }

    #[test]
    fn scoring_explains_the_anomaly_and_round_trips() {
        let model = Model::fit("m2", &examples(3000, 4), params()).unwrap_or_else(|e| panic!("{e}"));
        let json = serde_json::to_string(&model).unwrap_or_default();
        let back: Model = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, model);
        let features = Features { amount: 1e6, tx_count_1h: 40, ..Features::default() };
        let mut c = [0.0; MODEL_WIDTH];
        let s = model.score(&features, &mut c).unwrap_or_else(|e| panic!("{e}"));
        assert!((c.iter().sum::<f64>() - s.anomaly).abs() < 1e-9);
        assert!((0.0..=1.0).contains(&s.probability));
        assert!(s.supervised.is_some());
    }

    #[test]
    fn metrics_of_known_rankings() {
        let m = Metrics::compute(&[0.9, 0.8, 0.3, 0.2], &[true, false, true, false]);
        assert_eq!(m.auc_roc, 0.75);
        assert!((m.average_precision - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert_eq!((m.k, m.precision_at_k), (4, 0.5));
        // Ties are one threshold, whatever their order.
        let a = Metrics::compute(&[0.5, 0.5, 0.1], &[true, false, false]);
        let b = Metrics::compute(&[0.5, 0.5, 0.1], &[false, true, false]);
        assert_eq!((a.average_precision, b.average_precision), (0.5, 0.5));
    }
}
