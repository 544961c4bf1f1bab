//! Request bodies: payments of a fixed pool of accounts at a fixed pool of merchants, a
//! chosen fraction of them built to be HIGH risk.
//!
//! Every account lives in one of a dozen cities (its home: geo, country and currency) and
//! has its own typical amount; a genuine payment is near home, around that amount (never
//! above 900, so the amount rules stay quiet) through a POS, web, mobile or ATM channel. A
//! payment built to be HIGH risk is the same account, at home, online, for 10,000–50,000:
//! the default `HIGH_AMOUNT` rule (≥ 10,000, severity 0.9 above the 0.8 HIGH threshold)
//! makes it HIGH whatever the model says. It stays at home on purpose: a far-away payment
//! would also make the account's next genuine payment look like impossible travel.
//!
//! [`crate::load`] does not replay [`fraudsense_actors::synth`]: that generator writes a
//! whole dated history up front with its own 1–3 % fraud mix, while a load run needs
//! bodies stamped "now", on demand, with a fraud fraction it chooses. The bodies are
//! [`Transaction`] values, so they serialise exactly as the api expects.
//!
//! Account and merchant ids (`load-acc-0000042`, `load-mer-00017`) are the same in every
//! run, like real customers coming back; only transaction ids carry the run id. Every
//! random choice comes from one SplitMix64 seeded by the caller, so a seed always yields
//! the same sequence of payments.

use chrono::{DateTime, Utc};
use fraudsense_actors::{Transaction, transaction::Channel};
use rust_decimal::Decimal;
use serde_json::{Map, Value};

/// Cities accounts live in: (lat, lon, country, currency).
const CITIES: [(f64, f64, &str, &str); 12] = [
    (40.7128, -74.0060, "US", "USD"),
    (41.8781, -87.6298, "US", "USD"),
    (34.0522, -118.2437, "US", "USD"),
    (43.6532, -79.3832, "CA", "CAD"),
    (51.5074, -0.1278, "GB", "GBP"),
    (53.3498, -6.2603, "IE", "EUR"),
    (48.8566, 2.3522, "FR", "EUR"),
    (52.5200, 13.4050, "DE", "EUR"),
    (40.4168, -3.7038, "ES", "EUR"),
    (47.3769, 8.5417, "CH", "CHF"),
    (1.3521, 103.8198, "SG", "SGD"),
    (-33.8688, 151.2093, "AU", "AUD"),
];

/// The smallest amount built to be HIGH risk: the default `HIGH_AMOUNT` threshold.
pub const HIGH_RISK_MIN: u64 = 10_000;
/// The largest amount built to be HIGH risk.
pub const HIGH_RISK_MAX: u64 = 50_000;
/// Genuine payments stay below this (the default `ELEVATED_AMOUNT` is 1,000).
const GENUINE_MAX_CENTS: i64 = 90_000;

/// SplitMix64: small, fast and good enough for picking accounts and amounts.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }
}

/// One account's habits.
#[derive(Debug, Clone, Copy)]
struct Account {
    /// Index into [`CITIES`].
    home: usize,
    /// Typical amount, in cents.
    median_cents: f64,
}

/// One generated request body.
#[derive(Debug, Clone)]
pub struct Payment {
    /// The JSON body, ready to send.
    pub body: Vec<u8>,
    /// Whether it was built to be HIGH risk.
    pub high_risk: bool,
}

/// Makes the bodies of one run, in order.
#[derive(Debug, Clone)]
pub struct Bodies {
    rng: Rng,
    run_id: String,
    accounts: Vec<Account>,
    merchants: usize,
    fraud_mix: f64,
    /// Account churn: from `start`, every `period` the pool moves on to fresh account ids.
    churn: Option<(DateTime<Utc>, std::time::Duration)>,
    /// Added to every account number: a run with another base pays from other accounts.
    account_base: usize,
}

impl Bodies {
    /// Bodies for `run_id` over `accounts` accounts and `merchants` merchants (both ≥ 1),
    /// `fraud_mix` of them (0..=1) built to be HIGH risk.
    pub fn new(run_id: &str, accounts: usize, merchants: usize, fraud_mix: f64, seed: u64) -> Self {
        // Account habits depend on the account alone, so they are the same in every run.
        let mut habits = Rng::new(0x10AD);
        let accounts = (0..accounts.max(1))
            .map(|_| Account {
                home: habits.below(CITIES.len()),
                median_cents: (3_500.0 * (0.7 * habits.normal()).exp()).clamp(500.0, 30_000.0),
            })
            .collect();
        Self {
            rng: Rng::new(seed),
            run_id: run_id.to_owned(),
            accounts,
            merchants: merchants.max(1),
            fraud_mix: fraud_mix.clamp(0.0, 1.0),
            churn: None,
            account_base: 0,
        }
    }

    /// Account numbers start at `base` instead of 0: accounts no earlier run used (a
    /// benchmark step that must not inherit the windows of the step before).
    pub fn with_account_base(mut self, base: usize) -> Self {
        self.account_base = base;
        self
    }

    /// Account churn: payments happening in the `k`-th `period` after `start` come from
    /// accounts `k × accounts .. (k + 1) × accounts` (same habits, new ids), so the set of
    /// active accounts keeps moving and the worker must stop idle actors to stay flat.
    pub fn with_churn(mut self, start: DateTime<Utc>, period: std::time::Duration) -> Self {
        if !period.is_zero() {
            self.churn = Some((start, period));
        }
        self
    }

    /// How many pools the churn has moved on by `at`.
    fn epoch(&self, at: DateTime<Utc>) -> usize {
        let Some((start, period)) = self.churn else { return 0 };
        let elapsed = u128::try_from((at - start).num_milliseconds()).unwrap_or(0);
        usize::try_from(elapsed / period.as_millis().max(1)).unwrap_or(usize::MAX)
    }

    /// The id of request `n` of this run.
    pub fn transaction_id(&self, n: u64) -> String {
        transaction_id(&self.run_id, n)
    }

    /// The payment of request `n`, happening `at`.
    pub fn payment(&mut self, n: u64, at: DateTime<Utc>) -> Payment {
        let account = self.rng.below(self.accounts.len());
        let merchant = self.rng.below(self.merchants);
        let high_risk = self.rng.unit() < self.fraud_mix;
        let Account { home, median_cents } = self.accounts[account];
        let (lat, lon, country, currency) = CITIES[home];
        let (cents, channel) = if high_risk {
            let (low, high) = ((HIGH_RISK_MIN * 100) as f64, (HIGH_RISK_MAX * 100) as f64);
            let cents = (low.ln() + self.rng.unit() * (high.ln() - low.ln())).exp();
            (cents.round() as i64, Channel::Web)
        } else {
            let cents = (median_cents * (0.6 * self.rng.normal()).exp()).round() as i64;
            let channel = match self.rng.below(20) {
                0..=10 => Channel::Pos,
                11..=14 => Channel::Web,
                15..=18 => Channel::Mobile,
                _ => Channel::Atm,
            };
            (cents.clamp(100, GENUINE_MAX_CENTS), channel)
        };
        // Within about 10 km of home: never far enough for the travel rule.
        let (dlat, dlon) = (self.rng.unit() - 0.5, self.rng.unit() - 0.5);
        let mut metadata = Map::new();
        metadata.insert("source".to_owned(), Value::from("fraudsense-load"));
        metadata.insert("built".to_owned(), Value::from(if high_risk { "high_risk" } else { "genuine" }));
        let tx = Transaction {
            transaction_id: self.transaction_id(n),
            account_id: format!(
                "load-acc-{:07}",
                self.epoch(at)
                    .saturating_mul(self.accounts.len())
                    .saturating_add(account)
                    .saturating_add(self.account_base)
            ),
            amount: Decimal::new(cents, 2),
            currency: currency.to_owned(),
            timestamp: at.fixed_offset(),
            merchant_id: format!("load-mer-{merchant:05}"),
            geo_lat: Some(round5(lat + dlat * 0.15)),
            geo_lon: Some(round5(lon + dlon * 0.15)),
            country: Some(country.to_owned()),
            channel: Some(channel),
            metadata: Some(metadata),
        };
        Payment { body: serde_json::to_vec(&tx).unwrap_or_default(), high_risk }
    }
}

/// The id of request `n` of run `run_id`: `<run-id>-<n>`.
pub fn transaction_id(run_id: &str, n: u64) -> String {
    format!("{run_id}-{n}")
}

/// The request number of `transaction_id` if it belongs to run `run_id`.
pub fn request_number(run_id: &str, transaction_id: &str) -> Option<u64> {
    let rest = transaction_id.strip_prefix(run_id)?.strip_prefix('-')?;
    if rest.bytes().all(|b| b.is_ascii_digit()) { rest.parse().ok() } else { None }
}

fn round5(x: f64) -> f64 {
    (x * 1e5).round() / 1e5
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn parse(p: &Payment, now: DateTime<Utc>) -> Transaction {
        let value: Value = serde_json::from_slice(&p.body).unwrap_or_else(|e| panic!("{e}"));
        Transaction::parse(&value, now).unwrap_or_else(|e| panic!("invalid body {value}: {e:?}"))
    }

    #[test]
    fn load_bodies_are_valid_and_ids_unique() {
        let now = Utc::now();
        let mut bodies = Bodies::new("load-test", 50, 7, 0.3, 1);
        let mut ids = HashSet::new();
        for n in 0..5_000 {
            let p = bodies.payment(n, now);
            let tx = parse(&p, now);
            assert_eq!(request_number("load-test", &tx.transaction_id), Some(n));
            assert!(ids.insert(tx.transaction_id.clone()), "{} twice", tx.transaction_id);
            assert_eq!(tx.timestamp, now.fixed_offset());
            let account: usize = tx.account_id["load-acc-".len()..].parse().unwrap_or(usize::MAX);
            let merchant: usize = tx.merchant_id["load-mer-".len()..].parse().unwrap_or(usize::MAX);
            assert!(account < 50 && merchant < 7, "{} {}", tx.account_id, tx.merchant_id);
            let high = Decimal::from(HIGH_RISK_MIN);
            if p.high_risk {
                assert!(tx.amount >= high && tx.amount <= Decimal::from(HIGH_RISK_MAX), "{}", tx.amount);
            } else {
                assert!(tx.amount < Decimal::from(1000), "{}", tx.amount);
            }
        }
    }

    #[test]
    fn load_fraud_mix_is_within_tolerance() {
        for mix in [0.0, 0.02, 0.2, 0.5, 1.0] {
            let mut bodies = Bodies::new("mix", 1000, 100, mix, 7);
            let n = 20_000;
            let high = (0..n).filter(|&i| bodies.payment(i, Utc::now()).high_risk).count();
            let share = high as f64 / n as f64;
            assert!((share - mix).abs() <= 0.01, "mix {mix}: got {share}");
        }
    }

    #[test]
    fn load_same_seed_same_bodies() {
        let at = Utc::now();
        let mut a = Bodies::new("r", 100, 10, 0.1, 5);
        let mut b = Bodies::new("r", 100, 10, 0.1, 5);
        let mut c = Bodies::new("r", 100, 10, 0.1, 6);
        let (xs, ys, zs): (Vec<_>, Vec<_>, Vec<_>) = (0..50)
            .map(|n| (a.payment(n, at).body, b.payment(n, at).body, c.payment(n, at).body))
            .fold((vec![], vec![], vec![]), |mut acc, (x, y, z)| {
                acc.0.push(x);
                acc.1.push(y);
                acc.2.push(z);
                acc
            });
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn load_churn_moves_the_account_pool_on_every_period() {
        let start = Utc::now();
        let mut bodies =
            Bodies::new("c", 10, 3, 0.0, 9).with_churn(start, std::time::Duration::from_secs(60));
        let account = |b: &mut Bodies, secs: i64| -> usize {
            let at = start + chrono::TimeDelta::seconds(secs);
            parse(&b.payment(0, at), at).account_id["load-acc-".len()..].parse().unwrap_or(usize::MAX)
        };
        for _ in 0..50 {
            assert!(account(&mut bodies, 0) < 10);
            assert!(account(&mut bodies, 59) < 10);
            assert!((10..20).contains(&account(&mut bodies, 60)));
            assert!((50..60).contains(&account(&mut bodies, 330)));
        }
        let mut still = Bodies::new("c", 10, 3, 0.0, 9);
        assert!(account(&mut still, 600) < 10, "no churn unless asked");
        let mut based = Bodies::new("c", 10, 3, 0.0, 9).with_account_base(5_000);
        assert!((5_000..5_010).contains(&account(&mut based, 0)), "a base moves the whole pool");
    }

    #[test]
    fn load_request_numbers_only_match_their_run() {
        assert_eq!(request_number("run-1", "run-1-42"), Some(42));
        assert_eq!(request_number("run-1", "run-1-2-42"), None);
        assert_eq!(request_number("run-1", "run-12-4"), None);
        assert_eq!(request_number("run-1", "other-1"), None);
        assert_eq!(request_number("run-1", "run-1-+4"), None);
    }
}
