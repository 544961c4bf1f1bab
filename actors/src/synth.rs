//! Deterministic synthetic payment history, for training and evaluating fraud models.
//!
//! The world: 20 real cities (all with currencies worth roughly one US dollar, so amounts
//! are comparable across the data set the way the amount rules assume), merchants that are
//! either shops in a city (POS, a few ATMs) or online (web/mobile, headquartered in a city),
//! and accounts that live in a home city. Each account has its own activity rate, typical
//! amount, favourite merchants, channel habits and weekend behaviour; it pays mostly near
//! home, by the local daily rhythm (quiet at night), and sometimes travels (flights take
//! real time, so genuine travel never looks like teleporting).
//!
//! Four fraud scenarios are planted on top ([`Scenario`]); about 1–3 % of rows are fraud.
//! Every row carries its label and the time the label became known: fraud after a
//! chargeback 1–10 days later, genuine once 10 days passed without a dispute.
//!
//! The same [`SynthConfig`] always yields the same rows: every random choice comes from one
//! seeded `Rng` (SplitMix64) and nothing iterates a hash map.

use std::f64::consts::TAU;

use chrono::{DateTime, Datelike, TimeDelta, Timelike, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::iforest::Rng;
use crate::transaction::{Channel, Transaction};

/// One day in seconds.
const DAY: i64 = 86_400;
/// One hour in seconds.
const HOUR: i64 = 3_600;
/// 2026-09-01T00:00:00Z, the default start of the history.
const DEFAULT_START_SECS: i64 = 1_788_220_800;
/// Label delay of a genuine transaction: no dispute arrived within this time.
/// Seconds after which every label of a transaction is known (genuine ones arrive last).
pub const LABEL_MATURITY_SECS: i64 = GENUINE_LABEL_DELAY;
const GENUINE_LABEL_DELAY: i64 = 10 * DAY;
/// Cruising speed used to time flights, km/h (plus an hour on the ground).
const FLIGHT_KMH: f64 = 800.0;
/// Account takeovers happen from a city at least this far from everywhere the victim is.
const TAKEOVER_MIN_KM: f64 = 1_500.0;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthConfig {
    /// Seeds every random choice: the same config always yields the same history.
    pub seed: u64,
    /// Number of cardholder accounts (`acc-00000` …).
    pub accounts: usize,
    /// Number of merchants (`mer-0000` …): about 70 % shops, the rest online.
    pub merchants: usize,
    /// Length of the history in days.
    pub days: u32,
    /// First instant of the history; every event lies in `[start, start + days)`.
    pub start: DateTime<Utc>,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            accounts: 400,
            merchants: 150,
            days: 28,
            start: DateTime::from_timestamp(DEFAULT_START_SECS, 0).unwrap_or_default(),
        }
    }
}

impl SynthConfig {
    /// End of the history (exclusive). Every row validates with this as `now`.
    pub fn end(&self) -> DateTime<Utc> {
        offset(self.start, i64::from(self.days) * DAY)
    }
}

/// The kind of fraud a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// A burst of 5–20 tiny amounts within minutes at one online merchant the victim never
    /// used, often at night: a fraudster checking that stolen card details work.
    CardTesting,
    /// 2–6 large payments (3–20× the account's typical amount) at new merchants from a city
    /// more than 1000 km away, within hours of a genuine payment at home.
    AccountTakeover,
    /// One payment of 10–50× the account's typical amount at a new merchant.
    LargeAmount,
    /// For a few days in the second half of the history, 30–50 % of one or two busy
    /// merchants' payments are fraud, with moderately elevated amounts.
    CompromisedMerchant,
}

impl Scenario {
    /// Every scenario, in declaration order.
    pub const ALL: [Scenario; 4] = [
        Scenario::CardTesting,
        Scenario::AccountTakeover,
        Scenario::LargeAmount,
        Scenario::CompromisedMerchant,
    ];

    /// The snake_case name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::CardTesting => "card_testing",
            Scenario::AccountTakeover => "account_takeover",
            Scenario::LargeAmount => "large_amount",
            Scenario::CompromisedMerchant => "compromised_merchant",
        }
    }
}

/// One generated payment with its ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthTransaction {
    /// The payment, valid as a request body at the end of the history.
    pub transaction: Transaction,
    /// Whether it is fraud (exactly when `scenario` is set).
    pub fraud: bool,
    /// Which fraud scenario produced it; `None` for genuine payments.
    pub scenario: Option<Scenario>,
    /// When the label became known: fraud 1–10 days after the event (chargeback), genuine
    /// 10 days after (no dispute came). Training must only use labels known at its cut-off.
    pub labeled_at: DateTime<Utc>,
}

/// Generates the history: sorted by (event time, transaction id), identical for equal
/// configs. Empty when there are no accounts, merchants or days.
pub fn generate(config: &SynthConfig) -> Vec<SynthTransaction> {
    if config.accounts == 0 || config.merchants == 0 || config.days == 0 {
        return Vec::new();
    }
    let mut g = Generator::new(config);
    g.genuine_history();
    g.plant_fraud();
    g.finish()
}

// ---------------------------------------------------------------------------------------
// The world
// ---------------------------------------------------------------------------------------

/// A city: where accounts live and shops are.
struct City {
    lat: f64,
    lon: f64,
    country: &'static str,
    currency: &'static str,
    /// Relative share of accounts and merchants.
    weight: f64,
}

const fn city(lat: f64, lon: f64, country: &'static str, currency: &'static str, weight: f64) -> City {
    City { lat, lon, country, currency, weight }
}

/// New York, Chicago, Los Angeles, San Francisco, Toronto, Vancouver, Panama City, Quito,
/// London, Dublin, Paris, Berlin, Madrid, Rome, Amsterdam, Zurich, Helsinki, Singapore,
/// Sydney, Auckland.
const CITIES: [City; 20] = [
    city(40.7128, -74.0060, "US", "USD", 3.0),
    city(41.8781, -87.6298, "US", "USD", 1.6),
    city(34.0522, -118.2437, "US", "USD", 2.0),
    city(37.7749, -122.4194, "US", "USD", 1.2),
    city(43.6532, -79.3832, "CA", "CAD", 1.4),
    city(49.2827, -123.1207, "CA", "CAD", 0.8),
    city(8.9824, -79.5199, "PA", "USD", 0.5),
    city(-0.1807, -78.4678, "EC", "USD", 0.5),
    city(51.5074, -0.1278, "GB", "GBP", 2.6),
    city(53.3498, -6.2603, "IE", "EUR", 0.6),
    city(48.8566, 2.3522, "FR", "EUR", 2.0),
    city(52.5200, 13.4050, "DE", "EUR", 1.6),
    city(40.4168, -3.7038, "ES", "EUR", 1.2),
    city(41.9028, 12.4964, "IT", "EUR", 1.2),
    city(52.3676, 4.9041, "NL", "EUR", 0.8),
    city(47.3769, 8.5417, "CH", "CHF", 0.6),
    city(60.1699, 24.9384, "FI", "EUR", 0.5),
    city(1.3521, 103.8198, "SG", "SGD", 1.0),
    city(-33.8688, 151.2093, "AU", "AUD", 1.4),
    city(-36.8485, 174.7633, "NZ", "NZD", 0.6),
];

/// How a merchant is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A shop: card present at a terminal, charged in the shop's currency.
    Shop,
    /// A cash machine.
    Atm,
    /// Web or mobile app, charged in the card's currency, located where the customer is.
    Online,
}

/// A merchant category and its typical amount relative to an account's typical amount.
struct Category {
    name: &'static str,
    kind: Kind,
    /// Multiplier on the account's median amount.
    scale: f64,
    /// Log-normal spread of amounts within the category.
    spread: f64,
    /// Relative share of merchants (within the kind).
    weight: f64,
}

const fn category(name: &'static str, kind: Kind, scale: f64, spread: f64, weight: f64) -> Category {
    Category { name, kind, scale, spread, weight }
}

const CATEGORIES: [Category; 14] = [
    category("grocery", Kind::Shop, 0.8, 0.45, 0.22),
    category("restaurant", Kind::Shop, 0.9, 0.5, 0.18),
    category("cafe", Kind::Shop, 0.2, 0.35, 0.1),
    category("fuel", Kind::Shop, 1.1, 0.3, 0.09),
    category("pharmacy", Kind::Shop, 0.5, 0.5, 0.07),
    category("clothing", Kind::Shop, 1.8, 0.6, 0.08),
    category("electronics", Kind::Shop, 4.0, 0.8, 0.04),
    category("transport", Kind::Shop, 0.4, 0.4, 0.06),
    category("atm", Kind::Atm, 2.0, 0.5, 1.0),
    category("online_marketplace", Kind::Online, 1.3, 0.7, 0.3),
    category("travel", Kind::Online, 6.0, 0.7, 0.12),
    category("gaming", Kind::Online, 0.4, 0.8, 0.16),
    category("digital_subscription", Kind::Online, 0.3, 0.15, 0.18),
    category("food_delivery", Kind::Online, 0.8, 0.4, 0.24),
];

/// Relative activity by local hour, Monday to Friday: midday and evening peaks, quiet
/// between 01:00 and 06:00.
const WEEKDAY_HOURS: [f64; 24] = [
    0.5, 0.25, 0.12, 0.08, 0.08, 0.15, 0.5, 1.4, 2.4, 2.6, 2.8, 3.4, 4.4, 4.2, 3.2, 2.9, 3.2, 3.9, 4.6, 4.7,
    3.9, 2.9, 1.9, 1.1,
];
/// Saturday and Sunday: a later start, busier afternoons and late evenings.
const WEEKEND_HOURS: [f64; 24] = [
    0.9, 0.55, 0.25, 0.12, 0.08, 0.08, 0.18, 0.45, 1.1, 2.1, 3.1, 3.7, 4.3, 4.3, 3.9, 3.7, 3.7, 3.9, 4.3,
    4.5, 4.1, 3.3, 2.5, 1.7,
];

struct Merchant {
    city: usize,
    category: usize,
    lat: f64,
    lon: f64,
    /// This merchant's price level relative to its category.
    price: f64,
}

impl Merchant {
    fn kind(&self) -> Kind {
        CATEGORIES[self.category].kind
    }
}

/// One trip away from home (rel seconds: seconds since the start of the history).
struct Trip {
    city: usize,
    lat: f64,
    lon: f64,
    /// First and last local day of the trip (the flights' days).
    first_day: i64,
    last_day: i64,
    depart: i64,
    arrive: i64,
    back_depart: i64,
    back_arrive: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Home,
    Away,
    Flying,
}

struct Account {
    home: usize,
    lat: f64,
    lon: f64,
    /// Expected transactions per weekday.
    rate: f64,
    /// Multiplier on `rate` at weekends.
    weekend: f64,
    /// Typical (median) amount.
    median: f64,
    /// Log-normal spread of its amounts.
    sigma: f64,
    favourites: Vec<usize>,
    favourite_weights: Vec<f64>,
    /// Share of payments that go to a favourite merchant while at home.
    p_favourite: f64,
    /// Share of online payments made in the mobile app (rest: web).
    p_mobile: f64,
    /// Share of payments that are cash withdrawals.
    p_atm: f64,
    trip: Option<Trip>,
}

impl Account {
    fn place(&self, t: i64) -> Place {
        match &self.trip {
            Some(trip) if t >= trip.depart && t < trip.back_arrive => {
                if t >= trip.arrive && t < trip.back_depart { Place::Away } else { Place::Flying }
            }
            _ => Place::Home,
        }
    }

    /// City and location of the account at a place (flying counts as home).
    fn whereabouts(&self, place: Place) -> (usize, f64, f64) {
        match (&self.trip, place) {
            (Some(trip), Place::Away) => (trip.city, trip.lat, trip.lon),
            _ => (self.home, self.lat, self.lon),
        }
    }
}

/// A row before ids and timestamps are attached.
struct Row {
    /// Seconds since the start of the history.
    at: i64,
    account: usize,
    merchant: usize,
    cents: i64,
    currency: &'static str,
    geo: Option<(f64, f64)>,
    country: Option<&'static str>,
    channel: Channel,
    scenario: Option<Scenario>,
    label_delay: i64,
}

struct Generator<'a> {
    config: &'a SynthConfig,
    rng: Rng,
    /// History length in seconds.
    span: i64,
    /// UTC midnight of the first day, relative to the start (≤ 0).
    midnight: i64,
    /// Weekday of the first day, Monday = 0.
    weekday: i64,
    merchants: Vec<Merchant>,
    /// Shops (not ATMs) per city.
    shops: Vec<Vec<usize>>,
    atms: Vec<Vec<usize>>,
    online: Vec<usize>,
    accounts: Vec<Account>,
    rows: Vec<Row>,
    /// Each account's genuine rows: `rows[ranges[a].0..ranges[a].1]`, sorted by time.
    ranges: Vec<(usize, usize)>,
}

impl<'a> Generator<'a> {
    fn new(config: &'a SynthConfig) -> Self {
        let mut rng = Rng(config.seed);
        let merchants = make_merchants(&mut rng, config.merchants);
        let mut shops = vec![Vec::new(); CITIES.len()];
        let mut atms = vec![Vec::new(); CITIES.len()];
        let mut online = Vec::new();
        for (i, m) in merchants.iter().enumerate() {
            match m.kind() {
                Kind::Shop => shops[m.city].push(i),
                Kind::Atm => atms[m.city].push(i),
                Kind::Online => online.push(i),
            }
        }
        let mut g = Self {
            config,
            rng,
            span: i64::from(config.days) * DAY,
            midnight: -i64::from(config.start.num_seconds_from_midnight()),
            weekday: i64::from(config.start.weekday().num_days_from_monday()),
            merchants,
            shops,
            atms,
            online,
            accounts: Vec::with_capacity(config.accounts),
            rows: Vec::new(),
            ranges: Vec::with_capacity(config.accounts),
        };
        for _ in 0..config.accounts {
            let account = g.make_account();
            g.accounts.push(account);
        }
        g
    }

    fn make_account(&mut self) -> Account {
        let rng = &mut self.rng;
        let weights: Vec<f64> = CITIES.iter().map(|c| c.weight).collect();
        let home = weighted(rng, &weights);
        let (lat, lon) = jitter(rng, CITIES[home].lat, CITIES[home].lon, 8.0);

        // Favourites: mostly shops in the home city, the rest online.
        let want = 5 + rng.below(11);
        let local_share = 0.7 + 0.2 * rng.unit();
        let mut local = self.shops[home].clone();
        shuffle(rng, &mut local);
        let mut online = self.online.clone();
        shuffle(rng, &mut online);
        let n_local = ((want as f64 * local_share).round() as usize).min(local.len());
        let n_online = (want - n_local).min(online.len());
        let n_local = (want - n_online).min(local.len());
        let mut favourites: Vec<usize> =
            local[..n_local].iter().chain(&online[..n_online]).copied().collect();
        shuffle(rng, &mut favourites);
        let favourite_weights = (0..favourites.len()).map(|r| 1.0 / ((r + 1) as f64).powf(0.9)).collect();

        let trip = if self.config.days >= 6 && rng.unit() < 0.3 { self.make_trip(home) } else { None };
        let rng = &mut self.rng;
        Account {
            home,
            lat,
            lon,
            rate: lognormal(rng, 2.3, 0.7).clamp(0.5, 8.0),
            weekend: 0.8 + 0.5 * rng.unit(),
            median: lognormal(rng, 40.0, 0.6).clamp(10.0, 150.0),
            sigma: 0.3 + 0.3 * rng.unit(),
            favourites,
            favourite_weights,
            p_favourite: 0.86 + 0.1 * rng.unit(),
            p_mobile: 0.1 + 0.8 * rng.unit(),
            p_atm: if rng.unit() < 0.6 { 0.01 + 0.04 * rng.unit() } else { 0.0 },
            trip,
        }
    }

    /// A 3–7 day trip to a city with shops; flights take real time.
    fn make_trip(&mut self, home: usize) -> Option<Trip> {
        let rng = &mut self.rng;
        let weights: Vec<f64> = CITIES
            .iter()
            .enumerate()
            .map(|(i, c)| if i != home && !self.shops[i].is_empty() { c.weight } else { 0.0 })
            .collect();
        if weights.iter().all(|w| *w == 0.0) {
            return None;
        }
        let city = weighted(rng, &weights);
        let days = i64::from(self.config.days);
        let len = (3 + rng.below(5) as i64).min(days - 3);
        let first_day = 1 + rng.below((days - len - 1).max(1) as usize) as i64;
        let last_day = first_day + len;
        let (lat, lon) = jitter(rng, CITIES[city].lat, CITIES[city].lon, 5.0);
        let km = haversine_km((CITIES[home].lat, CITIES[home].lon), (CITIES[city].lat, CITIES[city].lon));
        let flight = ((km / FLIGHT_KMH + 1.0) * HOUR as f64) as i64;
        let depart =
            self.local_midnight(first_day, CITIES[home].lon) + 7 * HOUR + self.rng.below(4 * 3600) as i64;
        let arrive = depart + flight;
        let back_depart =
            (self.local_midnight(last_day, CITIES[city].lon) + 10 * HOUR + self.rng.below(6 * 3600) as i64)
                .max(arrive + DAY);
        Some(Trip {
            city,
            lat,
            lon,
            first_day,
            last_day,
            depart,
            arrive,
            back_depart,
            back_arrive: back_depart + flight,
        })
    }

    /// Local midnight of `day` (0 = the first day) at longitude `lon`, in rel seconds.
    fn local_midnight(&self, day: i64, lon: f64) -> i64 {
        self.midnight + day * DAY - utc_offset(lon)
    }

    fn is_weekend(&self, day: i64) -> bool {
        (self.weekday + day).rem_euclid(7) >= 5
    }

    /// A local time of day in seconds, following the daily rhythm.
    fn second_of_day(&mut self, weekend: bool) -> i64 {
        let hours = if weekend { &WEEKEND_HOURS } else { &WEEKDAY_HOURS };
        weighted(&mut self.rng, hours) as i64 * HOUR + self.rng.below(3600) as i64
    }

    // -----------------------------------------------------------------------------------
    // Genuine payments
    // -----------------------------------------------------------------------------------

    fn genuine_history(&mut self) {
        for a in 0..self.accounts.len() {
            let first = self.rows.len();
            // One day either side, so eastern and western cities fill the edges evenly.
            for day in -1..=i64::from(self.config.days) {
                let (home_share, away_share) = match &self.accounts[a].trip {
                    Some(t) if day == t.first_day || day == t.last_day => (0.5, 0.5),
                    Some(t) if day > t.first_day && day < t.last_day => (0.0, 1.0),
                    _ => (1.0, 0.0),
                };
                for (place, share) in [(Place::Home, home_share), (Place::Away, away_share)] {
                    if share > 0.0 {
                        self.genuine_day(a, day, place, share);
                    }
                }
            }
            self.rows[first..].sort_by_key(|r| r.at);
            self.ranges.push((first, self.rows.len()));
        }
    }

    fn genuine_day(&mut self, a: usize, day: i64, place: Place, share: f64) {
        let acc = &self.accounts[a];
        let (city, _, _) = acc.whereabouts(place);
        let weekend = self.is_weekend(day);
        let lambda = acc.rate * share * if weekend { acc.weekend } else { 1.0 };
        let midnight = self.local_midnight(day, CITIES[city].lon);
        for _ in 0..poisson(&mut self.rng, lambda) {
            let t = midnight + self.second_of_day(weekend);
            if t < 0 || t >= self.span || self.accounts[a].place(t) != place {
                continue;
            }
            if let Some(row) = self.genuine(a, t, place) {
                self.rows.push(row);
            }
        }
    }

    fn genuine(&mut self, a: usize, t: i64, place: Place) -> Option<Row> {
        let rng = &mut self.rng;
        let acc = &self.accounts[a];
        let (city, here_lat, here_lon) = acc.whereabouts(place);
        let merchant = if rng.unit() < acc.p_atm && !self.atms[city].is_empty() {
            pick(rng, &self.atms[city])
        } else if place == Place::Home && rng.unit() < acc.p_favourite && !acc.favourites.is_empty() {
            Some(acc.favourites[weighted(rng, &acc.favourite_weights)])
        } else if place == Place::Home {
            if rng.unit() < 0.65 { pick(rng, &self.shops[city]) } else { pick(rng, &self.online) }
        } else if rng.unit() < 0.2 {
            let online_favourites: Vec<usize> = acc
                .favourites
                .iter()
                .copied()
                .filter(|&m| self.merchants[m].kind() == Kind::Online)
                .collect();
            pick(rng, &online_favourites)
        } else {
            pick(rng, &self.shops[city])
        }
        .or_else(|| pick(rng, &self.online))
        .or_else(|| pick(rng, &self.shops[city]))?;

        let m = &self.merchants[merchant];
        let cat = &CATEGORIES[m.category];
        let sigma = (acc.sigma * acc.sigma + cat.spread * cat.spread).sqrt();
        let raw = acc.median * cat.scale * m.price * (sigma * normal(rng)).exp();
        let cents = match cat.kind {
            // Cash comes in notes of 20.
            Kind::Atm => ((raw / 20.0).round().max(1.0) * 2000.0) as i64,
            _ => to_cents(raw).max(99),
        };
        let mut row = Row {
            at: t,
            account: a,
            merchant,
            cents,
            currency: CITIES[acc.home].currency,
            geo: None,
            country: None,
            channel: Channel::Web,
            scenario: None,
            label_delay: GENUINE_LABEL_DELAY,
        };
        match cat.kind {
            Kind::Shop | Kind::Atm if m.city == city => {
                row.channel = if cat.kind == Kind::Atm { Channel::Atm } else { Channel::Pos };
                row.geo = Some((m.lat, m.lon));
                row.country = Some(CITIES[m.city].country);
                row.currency = CITIES[m.city].currency;
            }
            _ => {
                row.channel = if rng.unit() < acc.p_mobile { Channel::Mobile } else { Channel::Web };
                // IP geolocation: near the customer, sometimes unknown.
                if rng.unit() < 0.96 {
                    row.geo = Some(jitter(rng, here_lat, here_lon, 2.0));
                    row.country = Some(CITIES[city].country);
                }
            }
        }
        Some(row)
    }

    // -----------------------------------------------------------------------------------
    // Fraud
    // -----------------------------------------------------------------------------------

    fn plant_fraud(&mut self) {
        let mut eligible: Vec<usize> =
            (0..self.accounts.len()).filter(|&a| self.ranges[a].1 - self.ranges[a].0 >= 3).collect();
        shuffle(&mut self.rng, &mut eligible);
        if eligible.is_empty() {
            return;
        }
        let scale = self.accounts.len() as f64 * f64::from(self.config.days) / 28.0;
        let count = |per_account: f64| ((scale * per_account).round() as usize).max(1);
        let mut victims = eligible.iter().copied().cycle();
        let mut next = || victims.next().unwrap_or(0);
        let mut fraud = Vec::new();
        for _ in 0..count(0.06) {
            let v = next();
            self.card_testing(v, &mut fraud);
        }
        for _ in 0..count(0.09) {
            let v = next();
            self.account_takeover(v, &mut fraud);
        }
        for _ in 0..count(0.1) {
            let v = next();
            self.large_amount(v, &mut fraud);
        }
        self.compromised_merchants(&mut fraud);
        self.rows.append(&mut fraud);
    }

    /// Merchants the account paid genuinely.
    fn used(&self, a: usize) -> Vec<bool> {
        let mut used = vec![false; self.merchants.len()];
        let (from, to) = self.ranges[a];
        for r in &self.rows[from..to] {
            used[r.merchant] = true;
        }
        used
    }

    fn fraud_row(&mut self, scenario: Scenario, account: usize, merchant: usize, at: i64, cents: i64) -> Row {
        Row {
            at,
            account,
            merchant,
            cents: cents.max(1),
            currency: CITIES[self.accounts[account].home].currency,
            geo: None,
            country: None,
            channel: Channel::Web,
            scenario: Some(scenario),
            label_delay: DAY + self.rng.below(9 * DAY as usize + 1) as i64,
        }
    }

    fn card_testing(&mut self, v: usize, out: &mut Vec<Row>) {
        let used = self.used(v);
        let rng = &mut self.rng;
        let Some(merchant) = pick_new(rng, &self.online, &used)
            .or_else(|| pick_new(rng, &(0..self.merchants.len()).collect::<Vec<_>>(), &used))
        else {
            return;
        };
        let burst = 5 + rng.below(16);
        // Mostly at night in the victim's local time.
        let home_lon = CITIES[self.accounts[v].home].lon;
        let mut start = None;
        for _ in 0..20 {
            let hour = if self.rng.unit() < 0.65 { 1 + self.rng.below(5) } else { self.rng.below(24) };
            let day = self.rng.below(self.config.days as usize) as i64;
            let t = self.local_midnight(day, home_lon) + hour as i64 * HOUR + self.rng.below(3600) as i64;
            if t >= 0 && t + HOUR < self.span {
                start = Some(t);
                break;
            }
        }
        let Some(mut t) = start else { return };
        // The fraudster's IP: often hidden, otherwise anywhere.
        let geo = if self.rng.unit() < 0.5 {
            let c = self.rng.below(CITIES.len());
            Some((jitter(&mut self.rng, CITIES[c].lat, CITIES[c].lon, 15.0), CITIES[c].country))
        } else {
            None
        };
        for i in 0..burst {
            if i > 0 {
                t += 1 + (exponential(&mut self.rng, 12.0) as i64).min(60);
            }
            let cents = if self.rng.unit() < 0.3 {
                100 * (1 + self.rng.below(5) as i64)
            } else {
                50 + self.rng.below(451) as i64
            };
            let mut row = self.fraud_row(Scenario::CardTesting, v, merchant, t, cents);
            row.geo = geo.map(|(p, _)| p);
            row.country = geo.map(|(_, c)| c);
            row.channel = if self.rng.unit() < 0.85 { Channel::Web } else { Channel::Mobile };
            out.push(row);
        }
    }

    fn account_takeover(&mut self, v: usize, out: &mut Vec<Row>) {
        let acc = &self.accounts[v];
        let (from, to) = self.ranges[v];
        // A genuine payment at home, with hours of history left after it.
        let anchors: Vec<i64> = self.rows[from..to]
            .iter()
            .filter(|r| r.geo.is_some() && r.at + 6 * HOUR < self.span && acc.place(r.at) == Place::Home)
            .map(|r| r.at)
            .collect();
        let Some(&anchor) = anchors.get(self.rng.below(anchors.len())) else { return };
        let home = (CITIES[acc.home].lat, CITIES[acc.home].lon);
        let trip = acc.trip.as_ref().map(|t| (CITIES[t.city].lat, CITIES[t.city].lon));
        let far: Vec<usize> = (0..CITIES.len())
            .filter(|&c| {
                let p = (CITIES[c].lat, CITIES[c].lon);
                haversine_km(p, home) > TAKEOVER_MIN_KM
                    && trip.is_none_or(|q| haversine_km(p, q) > TAKEOVER_MIN_KM)
            })
            .collect();
        let Some(city) = pick(&mut self.rng, &far) else { return };
        let median = acc.median;
        let used = self.used(v);
        let (lat, lon) = jitter(&mut self.rng, CITIES[city].lat, CITIES[city].lon, 10.0);
        let count = 2 + self.rng.below(5);
        let mut t = anchor + 300 + (exponential(&mut self.rng, 1200.0) as i64).min(3300);
        for i in 0..count {
            if i > 0 {
                t += 120 + (exponential(&mut self.rng, 1500.0) as i64).min(3600);
            }
            if t >= self.span {
                break;
            }
            let shop =
                if self.rng.unit() < 0.35 { pick_new(&mut self.rng, &self.shops[city], &used) } else { None };
            let merchant = match shop.or_else(|| pick_new(&mut self.rng, &self.online, &used)) {
                Some(m) => m,
                None => continue,
            };
            let cents = to_cents(median * log_uniform(&mut self.rng, 3.0, 20.0));
            let mut row = self.fraud_row(Scenario::AccountTakeover, v, merchant, t, cents);
            row.country = Some(CITIES[city].country);
            if shop.is_some() {
                let m = &self.merchants[merchant];
                row.geo = Some((m.lat, m.lon));
                row.channel = Channel::Pos;
                row.currency = CITIES[city].currency;
            } else {
                row.geo = Some(jitter(&mut self.rng, lat, lon, 2.0));
                row.channel = if self.rng.unit() < 0.5 { Channel::Web } else { Channel::Mobile };
            }
            out.push(row);
        }
    }

    fn large_amount(&mut self, v: usize, out: &mut Vec<Row>) {
        let home = self.accounts[v].home;
        let mut at = None;
        for _ in 0..20 {
            let day = self.rng.below(self.config.days as usize) as i64;
            let t = self.local_midnight(day, CITIES[home].lon) + self.second_of_day(self.is_weekend(day));
            if t >= 0 && t < self.span && self.accounts[v].place(t) == Place::Home {
                at = Some(t);
                break;
            }
        }
        let Some(t) = at else { return };
        let used = self.used(v);
        let rng = &mut self.rng;
        let shop = if rng.unit() < 0.5 { pick_new(rng, &self.shops[home], &used) } else { None };
        let Some(merchant) = shop.or_else(|| pick_new(rng, &self.online, &used)) else { return };
        let cents = to_cents(self.accounts[v].median * log_uniform(rng, 10.0, 50.0));
        let mut row = self.fraud_row(Scenario::LargeAmount, v, merchant, t, cents);
        let (acc, m) = (&self.accounts[v], &self.merchants[merchant]);
        row.country = Some(CITIES[home].country);
        if shop.is_some() {
            row.geo = Some((m.lat, m.lon));
            row.channel = Channel::Pos;
            row.currency = CITIES[home].currency;
        } else {
            row.geo = Some(jitter(&mut self.rng, acc.lat, acc.lon, 2.0));
            row.channel = if self.rng.unit() < acc.p_mobile { Channel::Mobile } else { Channel::Web };
        }
        out.push(row);
    }

    /// One or two of the busiest merchants see a few days in which 30–50 % of their
    /// payments are fraud.
    fn compromised_merchants(&mut self, out: &mut Vec<Row>) {
        let mut volume = vec![0usize; self.merchants.len()];
        for r in &self.rows {
            volume[r.merchant] += 1;
        }
        let mut busiest: Vec<usize> =
            (0..self.merchants.len()).filter(|&m| self.merchants[m].kind() != Kind::Atm).collect();
        busiest.sort_by_key(|&m| (std::cmp::Reverse(volume[m]), m));
        busiest.truncate(10);
        shuffle(&mut self.rng, &mut busiest);
        let chosen = (1 + self.rng.below(2)).min(busiest.len());
        for &merchant in &busiest[..chosen] {
            let days = i64::from(self.config.days);
            let len = (3 + self.rng.below(3) as i64).min((days / 2).max(1));
            let first = days / 2 + self.rng.below((days - days / 2 - len + 1).max(1) as usize) as i64;
            let (from, to) = (first * DAY, ((first + len) * DAY).min(self.span));
            let genuine =
                self.rows.iter().filter(|r| r.merchant == merchant && r.at >= from && r.at < to).count();
            let share = 0.3 + 0.2 * self.rng.unit();
            let count = ((genuine as f64 * share / (1.0 - share)).round() as usize).max(3);
            let m = &self.merchants[merchant];
            let (city, kind, category, price) = (m.city, m.kind(), m.category, m.price);
            let locals: Vec<usize> =
                (0..self.accounts.len()).filter(|&a| self.accounts[a].home == city).collect();
            let pool: Vec<usize> = if kind == Kind::Shop && !locals.is_empty() {
                locals
            } else {
                (0..self.accounts.len()).collect()
            };
            for _ in 0..count {
                let Some(a) = pick(&mut self.rng, &pool) else { return };
                let day = first + self.rng.below(len as usize) as i64;
                let t = (self.local_midnight(day, CITIES[city].lon)
                    + self.second_of_day(self.is_weekend(day)))
                .clamp(from, to - 1);
                let raw = self.accounts[a].median
                    * CATEGORIES[category].scale
                    * price
                    * log_uniform(&mut self.rng, 1.5, 4.0);
                let mut row = self.fraud_row(Scenario::CompromisedMerchant, a, merchant, t, to_cents(raw));
                if kind == Kind::Shop {
                    row.geo = Some((self.merchants[merchant].lat, self.merchants[merchant].lon));
                    row.country = Some(CITIES[city].country);
                    row.currency = CITIES[city].currency;
                    row.channel = Channel::Pos;
                } else {
                    let c = self.rng.below(CITIES.len());
                    if self.rng.unit() < 0.5 {
                        row.geo = Some(jitter(&mut self.rng, CITIES[c].lat, CITIES[c].lon, 15.0));
                        row.country = Some(CITIES[c].country);
                    }
                    row.channel = if self.rng.unit() < 0.6 { Channel::Web } else { Channel::Mobile };
                }
                out.push(row);
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Output
    // -----------------------------------------------------------------------------------

    fn finish(mut self) -> Vec<SynthTransaction> {
        // Stable: ties keep generation order, which is itself deterministic.
        self.rows.sort_by_key(|r| r.at);
        let start = self.config.start;
        self.rows
            .iter()
            .enumerate()
            .map(|(n, r)| {
                let at = offset(start, r.at);
                let mut metadata = Map::new();
                metadata.insert(
                    "merchant_category".to_owned(),
                    Value::from(CATEGORIES[self.merchants[r.merchant].category].name),
                );
                SynthTransaction {
                    transaction: Transaction {
                        transaction_id: format!("syn-{}-{n:07}", self.config.seed),
                        account_id: format!("acc-{:05}", r.account),
                        amount: Decimal::new(r.cents, 2),
                        currency: r.currency.to_owned(),
                        timestamp: at.fixed_offset(),
                        merchant_id: format!("mer-{:04}", r.merchant),
                        geo_lat: r.geo.map(|(lat, _)| round5(lat)),
                        geo_lon: r.geo.map(|(_, lon)| round5(lon)),
                        country: r.country.map(str::to_owned),
                        channel: Some(r.channel),
                        metadata: Some(metadata),
                    },
                    fraud: r.scenario.is_some(),
                    scenario: r.scenario,
                    labeled_at: offset(at, r.label_delay),
                }
            })
            .collect()
    }
}

fn make_merchants(rng: &mut Rng, count: usize) -> Vec<Merchant> {
    let n = CITIES.len();
    let shops = if count >= 2 { (count as f64 * 0.7).round() as usize } else { count };
    let city_weights: Vec<f64> = CITIES.iter().map(|c| c.weight).collect();
    let of_kind = |kind: Kind| -> Vec<f64> {
        CATEGORIES.iter().map(|c| if c.kind == kind { c.weight } else { 0.0 }).collect()
    };
    let (shop_weights, online_weights) = (of_kind(Kind::Shop), of_kind(Kind::Online));
    let atm = CATEGORIES.iter().position(|c| c.kind == Kind::Atm).unwrap_or(0);
    let mut merchants: Vec<Merchant> = (0..count)
        .map(|i| {
            // Every city gets shops first, then (when there are enough) an ATM operator.
            let (city, category) = if i < shops && i < n {
                (i, weighted(rng, &shop_weights))
            } else if i < shops && i < 2 * n && shops >= 4 * n {
                (i - n, atm)
            } else if i < shops {
                (weighted(rng, &city_weights), weighted(rng, &shop_weights))
            } else {
                (weighted(rng, &city_weights), weighted(rng, &online_weights))
            };
            let (lat, lon) = if CATEGORIES[category].kind == Kind::Online {
                (CITIES[city].lat, CITIES[city].lon)
            } else {
                jitter(rng, CITIES[city].lat, CITIES[city].lon, 8.0)
            };
            Merchant { city, category, lat, lon, price: lognormal(rng, 1.0, 0.25) }
        })
        .collect();
    shuffle(rng, &mut merchants);
    merchants
}

// ---------------------------------------------------------------------------------------
// Sampling and geometry helpers
// ---------------------------------------------------------------------------------------

/// Standard normal (Box–Muller).
fn normal(rng: &mut Rng) -> f64 {
    let u = 1.0 - rng.unit(); // (0, 1]: the logarithm stays finite
    (-2.0 * u.ln()).sqrt() * (TAU * rng.unit()).cos()
}

/// Log-normal with the given median and log-space spread.
fn lognormal(rng: &mut Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// Exponential with the given mean: the gap between Poisson arrivals.
fn exponential(rng: &mut Rng, mean: f64) -> f64 {
    -mean * (1.0 - rng.unit()).ln()
}

/// Number of Poisson arrivals with the given expectation.
fn poisson(rng: &mut Rng, lambda: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda > 30.0 {
        return (lambda + lambda.sqrt() * normal(rng)).round().max(0.0) as u32;
    }
    // Knuth: multiply uniforms until the product drops below e^-λ.
    let limit = (-lambda).exp();
    let mut k = 0;
    let mut product = rng.unit();
    while product > limit {
        k += 1;
        product *= rng.unit();
    }
    k
}

/// Uniform on a log scale between `low` and `high`.
fn log_uniform(rng: &mut Rng, low: f64, high: f64) -> f64 {
    (low.ln() + rng.unit() * (high.ln() - low.ln())).exp()
}

/// Index drawn with probability proportional to its weight (`weights` not empty).
fn weighted(rng: &mut Rng, weights: &[f64]) -> usize {
    let mut x = rng.unit() * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len().saturating_sub(1)
}

fn pick(rng: &mut Rng, from: &[usize]) -> Option<usize> {
    from.get(rng.below(from.len())).copied()
}

/// A member of `from` that is not `used`.
fn pick_new(rng: &mut Rng, from: &[usize], used: &[bool]) -> Option<usize> {
    let fresh: Vec<usize> = from.iter().copied().filter(|&m| !used[m]).collect();
    pick(rng, &fresh)
}

fn shuffle<T>(rng: &mut Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
}

/// A point uniformly within `radius_km` of (`lat`, `lon`).
fn jitter(rng: &mut Rng, lat: f64, lon: f64, radius_km: f64) -> (f64, f64) {
    let r = radius_km * rng.unit().sqrt();
    let angle = TAU * rng.unit();
    let lat2 = (lat + r * angle.sin() / 111.32).clamp(-89.9, 89.9);
    let mut lon2 = lon + r * angle.cos() / (111.32 * lat.to_radians().cos().max(0.01));
    if lon2 > 180.0 {
        lon2 -= 360.0;
    } else if lon2 < -180.0 {
        lon2 += 360.0;
    }
    (lat2, lon2)
}

/// Great-circle distance in km between two (lat, lon) points.
fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lat2) = (a.0.to_radians(), b.0.to_radians());
    let (dlat, dlon) = (lat2 - lat1, (b.1 - a.1).to_radians());
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

/// Solar-time offset from UTC at a longitude, in seconds.
fn utc_offset(lon: f64) -> i64 {
    (lon / 15.0 * HOUR as f64).round() as i64
}

fn to_cents(amount: f64) -> i64 {
    (amount * 100.0).round().clamp(1.0, 1e11) as i64
}

fn round5(x: f64) -> f64 {
    (x * 1e5).round() / 1e5
}

/// `t` plus `secs` seconds (saturating at chrono's range).
fn offset(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    TimeDelta::try_seconds(secs).and_then(|d| t.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn history() -> (SynthConfig, Vec<SynthTransaction>) {
        let config = SynthConfig::default();
        let rows = generate(&config);
        (config, rows)
    }

    fn location(t: &Transaction) -> Option<(f64, f64)> {
        t.geo_lat.zip(t.geo_lon)
    }

    #[test]
    fn default_starts_on_the_first_of_september() {
        let config = SynthConfig::default();
        assert_eq!(config.start.to_rfc3339(), "2026-09-01T00:00:00+00:00");
        assert_eq!(config.end().to_rfc3339(), "2026-09-29T00:00:00+00:00");
    }

    #[test]
    fn same_seed_same_history_other_seed_other_history() {
        let (config, a) = history();
        assert_eq!(a, generate(&config));
        let b = generate(&SynthConfig { seed: 7, ..config });
        let content = |r: &SynthTransaction| (r.transaction.timestamp, r.transaction.amount);
        assert!(a.len() != b.len() || a.iter().zip(&b).any(|(x, y)| content(x) != content(y)));
    }

    #[test]
    fn sorted_by_event_time_then_id() {
        let (_, rows) = history();
        let key = |r: &SynthTransaction| (r.transaction.event_time(), r.transaction.transaction_id.clone());
        assert!(rows.windows(2).all(|w| key(&w[0]) < key(&w[1])));
    }

    #[test]
    fn every_row_is_a_valid_transaction_inside_the_history() {
        let (config, rows) = history();
        let now = config.end();
        for r in &rows {
            let body = serde_json::to_value(&r.transaction).unwrap_or_else(|e| panic!("{e}"));
            let parsed = Transaction::parse(&body, now).unwrap_or_else(|e| panic!("{r:?}: {e:?}"));
            assert_eq!(parsed, r.transaction);
            let at = r.transaction.event_time();
            assert!(at >= config.start && at < now, "{at} outside the history");
            assert_eq!(r.fraud, r.scenario.is_some());
        }
    }

    #[test]
    fn fraud_rate_is_realistic_and_every_scenario_is_present() {
        let (_, rows) = history();
        let fraud = rows.iter().filter(|r| r.fraud).count();
        let rate = fraud as f64 / rows.len() as f64;
        assert!((25_000..=45_000).contains(&rows.len()), "{} rows", rows.len());
        assert!((0.01..=0.03).contains(&rate), "fraud rate {rate}");
        for s in Scenario::ALL {
            assert!(rows.iter().any(|r| r.scenario == Some(s)), "{} missing", s.as_str());
        }
    }

    #[test]
    fn card_testing_bursts_are_tiny_and_quick() {
        let (_, rows) = history();
        let mut bursts: BTreeMap<&str, Vec<&SynthTransaction>> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.scenario == Some(Scenario::CardTesting)) {
            bursts.entry(&r.transaction.account_id).or_default().push(r);
        }
        assert!(!bursts.is_empty());
        for burst in bursts.values() {
            assert!((5..=20).contains(&burst.len()), "burst of {}", burst.len());
            let small = Decimal::new(50, 2)..=Decimal::new(500, 2);
            assert!(burst.iter().all(|r| small.contains(&r.transaction.amount)));
            let merchant = &burst[0].transaction.merchant_id;
            assert!(burst.iter().all(|r| &r.transaction.merchant_id == merchant));
            let first = burst[0].transaction.event_time();
            let last = burst[burst.len() - 1].transaction.event_time();
            assert!(last - first <= TimeDelta::minutes(10), "burst took {}", last - first);
        }
    }

    #[test]
    fn takeovers_happen_far_from_the_previous_genuine_payment() {
        let (_, rows) = history();
        let mut last_genuine: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        let mut seen = 0;
        for r in &rows {
            let t = &r.transaction;
            match (r.scenario, location(t)) {
                (None, Some(p)) => {
                    last_genuine.insert(&t.account_id, p);
                }
                (Some(Scenario::AccountTakeover), Some(p)) => {
                    let Some(&home) = last_genuine.get(t.account_id.as_str()) else {
                        panic!("takeover {} without earlier genuine payment", t.transaction_id)
                    };
                    let km = haversine_km(home, p);
                    assert!(km > 1000.0, "takeover {} only {km:.0} km away", t.transaction_id);
                    seen += 1;
                }
                _ => {}
            }
        }
        assert!(seen > 0);
    }

    #[test]
    fn labels_come_after_the_event() {
        let (_, rows) = history();
        for r in &rows {
            let delay = r.labeled_at - r.transaction.event_time();
            if r.fraud {
                assert!(delay >= TimeDelta::days(1) && delay <= TimeDelta::days(10), "fraud delay {delay}");
            } else {
                assert_eq!(delay, TimeDelta::days(10));
            }
        }
    }

    #[test]
    fn tiny_and_empty_configs_do_not_panic() {
        assert!(generate(&SynthConfig { accounts: 0, ..SynthConfig::default() }).is_empty());
        for (accounts, merchants, days) in [(1, 1, 1), (3, 2, 2), (5, 30, 7)] {
            let config = SynthConfig { accounts, merchants, days, ..SynthConfig::default() };
            let now = config.end();
            for r in generate(&config) {
                let body = serde_json::to_value(&r.transaction).unwrap_or_else(|e| panic!("{e}"));
                assert!(Transaction::parse(&body, now).is_ok());
            }
        }
    }

    #[test]
    fn haversine_matches_known_distances() {
        let paris = (48.8566, 2.3522);
        let london = (51.5074, -0.1278);
        assert!((haversine_km(paris, london) - 343.5).abs() < 5.0);
        assert!(haversine_km(paris, paris) < 1e-9);
    }
}
