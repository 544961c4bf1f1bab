//! Isolation Forest (Liu, Ting and Zhou, 2008), written here because smartcore has none.
//!
//! - **Training**: each tree grows on a random sub-sample of `sample_size` rows (without
//!   replacement), splitting on a random feature at a uniform random threshold between that
//!   feature's minimum and maximum in the node, until a node holds one row or the depth limit
//!   `ceil(log2(sample_size))` is reached.
//! - **Scoring**: the path length `h(x)` is the depth of the leaf `x` falls in plus `c(size)`
//!   for the rows left unsplit there, and the score is `2^(-E[h(x)] / c(sample_size))` in
//!   `[0, 1]`: near 1 is anomalous, about 0.5 or less is normal.
//! - **Explanation**: each split on the path credits its feature with `1 / depth` (shallow
//!   splits isolate more); the credits, averaged over trees and normalised to sum to 1,
//!   say which features made the point easy to isolate.
//!
//! Deterministic for a given seed (its own SplitMix64 generator), serialisable as a versioned
//! artifact, and scoring one row walks flat node arrays without allocating.

use serde::{Deserialize, Serialize};

/// Format version of the serialised artifact; bump when the layout changes.
pub const ARTIFACT_FORMAT: u32 = 1;

/// Euler–Mascheroni constant, for the harmonic-number approximation in `c(n)`.
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// Average path length of an unsuccessful search in a binary search tree of `n` nodes: the
/// normaliser of path lengths (`c(n)` in the paper).
pub fn average_path_length(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        n => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

/// Training parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Number of trees.
    pub trees: usize,
    /// Rows per tree (ψ); 256 is the paper's default.
    pub sample_size: usize,
    /// Seed of the random generator: same seed and data, same forest.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self { trees: 100, sample_size: 256, seed: 0x5eed }
    }
}

/// One node of a tree, stored flat (16 bytes). A leaf has `feature == LEAF`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Node {
    feature: u32,
    /// The split value; for a leaf, `c(size)` precomputed, so scoring takes no logarithm.
    threshold: f64,
    /// Index of the left child (the right child is `left + 1`); for a leaf, its row count.
    left_or_size: u32,
}

const LEAF: u32 = u32::MAX;

/// A trained forest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolationForest {
    /// Artifact format (see [`ARTIFACT_FORMAT`]).
    pub format: u32,
    /// Model version tag stored with every score it produces.
    pub version: String,
    /// Names of the features, in column order.
    pub features: Vec<String>,
    /// How it was trained.
    pub params: Params,
    /// `c(sample_size)`, the normaliser.
    normaliser: f64,
    /// All trees' nodes, tree after tree.
    nodes: Vec<Node>,
    /// Index of each tree's root in `nodes`.
    roots: Vec<u32>,
}

/// Why a forest could not be trained or used.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum ForestError {
    /// No rows, or rows of different widths, or names not matching the width.
    #[error("training data must be non-empty rows of {0} features")]
    BadData(usize),
    /// A row to score has the wrong number of features.
    #[error("expected {expected} features, got {got}")]
    Width {
        /// Features the model was trained on.
        expected: usize,
        /// Features given.
        got: usize,
    },
}

/// SplitMix64: small, fast, and deterministic across platforms (shared by the forest and
/// the synthetic data generator).
#[derive(Debug, Clone)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl IsolationForest {
    /// Trains on `rows` (each with one value per name in `features`).
    pub fn fit(
        version: &str,
        features: &[&str],
        rows: &[Vec<f64>],
        params: Params,
    ) -> Result<Self, ForestError> {
        let width = features.len();
        if rows.is_empty() || width == 0 || rows.iter().any(|r| r.len() != width) {
            return Err(ForestError::BadData(width));
        }
        let sample_size = params.sample_size.clamp(2, rows.len().max(2)).min(rows.len());
        let depth_limit = (sample_size as f64).log2().ceil() as usize;
        let mut rng = Rng(params.seed);
        let mut nodes = Vec::new();
        let mut roots = Vec::with_capacity(params.trees);
        let mut indices: Vec<usize> = (0..rows.len()).collect();
        for _ in 0..params.trees {
            // Partial Fisher–Yates: the first `sample_size` entries become the sample.
            for i in 0..sample_size {
                let j = i + rng.below(indices.len() - i);
                indices.swap(i, j);
            }
            let mut sample: Vec<usize> = indices[..sample_size].to_vec();
            roots.push(u32::try_from(nodes.len()).unwrap_or(u32::MAX));
            nodes.push(Node { feature: LEAF, threshold: 0.0, left_or_size: 0 });
            let root = nodes.len() - 1;
            grow(&mut nodes, root, rows, &mut sample, 0, depth_limit, &mut rng);
        }
        Ok(Self {
            format: ARTIFACT_FORMAT,
            version: version.to_owned(),
            features: features.iter().map(|f| (*f).to_owned()).collect(),
            params: Params { sample_size, ..params },
            normaliser: average_path_length(sample_size),
            nodes,
            roots,
        })
    }

    /// Anomaly score of one row in `[0, 1]`. Allocation-free.
    pub fn score(&self, row: &[f64]) -> Result<f64, ForestError> {
        self.check(row)?;
        let total: f64 = self.roots.iter().map(|&root| self.path(root, row, |_, _| {})).sum();
        Ok(self.to_score(total))
    }

    /// Score of one row, and each feature's share of what isolated it written into
    /// `contributions` (one slot per feature, summing to 1). Allocation-free.
    pub fn explain(&self, row: &[f64], contributions: &mut [f64]) -> Result<f64, ForestError> {
        self.check(row)?;
        if contributions.len() != self.features.len() {
            return Err(ForestError::Width { expected: self.features.len(), got: contributions.len() });
        }
        contributions.iter_mut().for_each(|c| *c = 0.0);
        let mut total = 0.0;
        for &root in &self.roots {
            total += self.path(root, row, |feature, depth| {
                if let Some(c) = contributions.get_mut(feature) {
                    *c += 1.0 / depth as f64;
                }
            });
        }
        let sum: f64 = contributions.iter().sum();
        if sum > 0.0 {
            contributions.iter_mut().for_each(|c| *c /= sum);
        }
        Ok(self.to_score(total))
    }

    fn check(&self, row: &[f64]) -> Result<(), ForestError> {
        if row.len() == self.features.len() {
            Ok(())
        } else {
            Err(ForestError::Width { expected: self.features.len(), got: row.len() })
        }
    }

    fn to_score(&self, total_path: f64) -> f64 {
        if self.roots.is_empty() || self.normaliser <= 0.0 {
            return 0.5;
        }
        let mean = total_path / self.roots.len() as f64;
        2f64.powf(-mean / self.normaliser)
    }

    /// Path length of `row` in the tree at `root`; `on_split(feature, depth)` sees each split.
    fn path(&self, root: u32, row: &[f64], mut on_split: impl FnMut(usize, usize)) -> f64 {
        let mut at = root as usize;
        let mut depth = 0usize;
        loop {
            let Some(node) = self.nodes.get(at) else { return depth as f64 };
            if node.feature == LEAF {
                return depth as f64 + node.threshold;
            }
            depth += 1;
            on_split(node.feature as usize, depth);
            let value = row.get(node.feature as usize).copied().unwrap_or(0.0);
            at = node.left_or_size as usize + usize::from(value >= node.threshold);
        }
    }
}

/// Grows the subtree at `nodes[at]` over `sample` (row indices).
fn grow(
    nodes: &mut Vec<Node>,
    at: usize,
    rows: &[Vec<f64>],
    sample: &mut [usize],
    depth: usize,
    depth_limit: usize,
    rng: &mut Rng,
) {
    let leaf = Node {
        feature: LEAF,
        threshold: average_path_length(sample.len()),
        left_or_size: u32::try_from(sample.len()).unwrap_or(u32::MAX),
    };
    if sample.len() <= 1 || depth >= depth_limit {
        nodes[at] = leaf;
        return;
    }
    // A random feature that still varies here (a few tries, then give up: all equal).
    let width = rows[sample[0]].len();
    let mut split = None;
    for _ in 0..width.max(4) {
        let feature = rng.below(width);
        let (lo, hi) = sample.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &i| {
            let v = rows[i][feature];
            (lo.min(v), hi.max(v))
        });
        if hi > lo {
            split = Some((feature, lo + rng.unit() * (hi - lo)));
            break;
        }
    }
    let Some((feature, threshold)) = split else {
        nodes[at] = leaf;
        return;
    };
    // Partition: values below the threshold first.
    let mut mid = 0;
    for i in 0..sample.len() {
        if rows[sample[i]][feature] < threshold {
            sample.swap(i, mid);
            mid += 1;
        }
    }
    let left = nodes.len();
    nodes.push(leaf);
    nodes.push(leaf);
    nodes[at] = Node {
        feature: u32::try_from(feature).unwrap_or(LEAF - 1),
        threshold,
        left_or_size: u32::try_from(left).unwrap_or(u32::MAX),
    };
    let (below, above) = sample.split_at_mut(mid);
    grow(nodes, left, rows, below, depth + 1, depth_limit, rng);
    grow(nodes, left + 1, rows, above, depth + 1, depth_limit, rng);
}

/// Area under the ROC curve of `scores` against `labels` (true = positive), by ranks.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut pairs: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut positives) = (0.0, 0usize);
    let mut i = 0;
    while i < pairs.len() {
        // Tied scores share their average rank.
        let mut j = i;
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            j += 1;
        }
        let average_rank = (i + j + 1) as f64 / 2.0;
        for pair in &pairs[i..j] {
            if pair.1 {
                rank_sum += average_rank;
                positives += 1;
            }
        }
        i = j;
    }
    let negatives = pairs.len() - positives;
    if positives == 0 || negatives == 0 {
        return 0.5;
    }
    (rank_sum - (positives * (positives + 1)) as f64 / 2.0) / (positives * negatives) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Normal points around two clusters plus planted outliers far away.
    fn synthetic(normal: usize, outliers: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<bool>) {
        let mut rng = Rng(seed);
        let mut gauss = || {
            // Box–Muller.
            let (u, v) = (rng.unit().max(1e-12), rng.unit());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        };
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for i in 0..normal {
            let centre = if i % 2 == 0 { 0.0 } else { 5.0 };
            rows.push(vec![centre + gauss(), centre + gauss(), gauss()]);
            labels.push(false);
        }
        for i in 0..outliers {
            let far = 12.0 + i as f64;
            rows.push(vec![far, -far, 6.0 + gauss()]);
            labels.push(true);
        }
        (rows, labels)
    }

    const NAMES: [&str; 3] = ["x", "y", "z"];

    #[test]
    fn c_n_matches_the_paper() {
        assert_eq!(average_path_length(1), 0.0);
        assert_eq!(average_path_length(2), 1.0);
        assert!((average_path_length(256) - 10.244).abs() < 0.01);
    }

    #[test]
    fn planted_anomalies_rank_on_top_and_the_auc_is_high() {
        let (rows, labels) = synthetic(2000, 20, 7);
        let forest =
            IsolationForest::fit("test", &NAMES, &rows, Params::default()).unwrap_or_else(|e| panic!("{e}"));
        let scores: Vec<f64> = rows.iter().map(|r| forest.score(r).unwrap_or(0.0)).collect();
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
        let top: usize = order[..20].iter().filter(|i| labels[**i]).count();
        assert!(top >= 18, "only {top} of 20 planted anomalies in the top 20");
        let auc = roc_auc(&scores, &labels);
        assert!(auc > 0.99, "AUC {auc}");
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
        let normal_mean = scores[..2000].iter().sum::<f64>() / 2000.0;
        assert!(normal_mean < 0.5 && scores[2000..].iter().all(|s| *s > 0.6), "normal mean {normal_mean}");
    }

    #[test]
    fn same_seed_same_forest_and_it_round_trips() {
        let (rows, _) = synthetic(500, 5, 3);
        let a =
            IsolationForest::fit("v1", &NAMES, &rows, Params::default()).unwrap_or_else(|e| panic!("{e}"));
        let b =
            IsolationForest::fit("v1", &NAMES, &rows, Params::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(a == b, "same seed, different forests");
        let other = IsolationForest::fit("v1", &NAMES, &rows, Params { seed: 99, ..Params::default() });
        assert_ne!(Some(&a), other.as_ref().ok());
        let json = serde_json::to_string(&a).unwrap_or_default();
        let back: IsolationForest = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert!(back == a, "the artifact does not round-trip exactly");
        assert_eq!(back.score(&rows[0]), a.score(&rows[0]));
    }

    #[test]
    fn explanations_point_at_the_unusual_feature() {
        let (mut rows, _) = synthetic(1000, 0, 5);
        let forest =
            IsolationForest::fit("t", &NAMES, &rows, Params::default()).unwrap_or_else(|e| panic!("{e}"));
        rows.push(vec![0.0, 0.0, 40.0]); // only z is extreme
        let mut c = [0.0; 3];
        let score = forest.explain(&rows[1000], &mut c).unwrap_or(0.0);
        let typical = forest.score(&rows[0]).unwrap_or(1.0);
        assert!(score > 0.55 && score > typical + 0.1, "{score} vs a typical {typical}");
        assert!(c[2] > c[0] && c[2] > c[1], "{c:?}");
        assert!((c.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(forest.score(&rows[1000]), Ok(score));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(IsolationForest::fit("t", &NAMES, &[], Params::default()), Err(ForestError::BadData(3)));
        assert!(IsolationForest::fit("t", &NAMES, &[vec![1.0]], Params::default()).is_err());
        let forest = IsolationForest::fit("t", &NAMES, &vec![vec![1.0, 2.0, 3.0]; 10], Params::default());
        let forest = forest.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(forest.score(&[1.0]), Err(ForestError::Width { expected: 3, got: 1 }));
        // All rows equal: nothing to split, every point equally (un)remarkable.
        assert!(forest.score(&[1.0, 2.0, 3.0]).is_ok_and(|s| (0.0..=1.0).contains(&s)));
    }

    #[test]
    fn auc_of_known_rankings() {
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]), 1.0);
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]), 0.0);
        assert_eq!(roc_auc(&[0.5, 0.5], &[false, true]), 0.5);
    }
}
