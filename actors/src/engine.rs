//! Hot reload: every worker polls which rule set, model and shadow model are active and
//! swaps in a new [`Engine`] when one changes — no restart, no redeploy. The poll is one
//! cheap statement every `ENGINE_REFRESH_MS`; artifacts are only read when a version
//! changes. A version that cannot be loaded is logged and counted, and the worker keeps
//! scoring with what it has.

use std::{sync::Arc, time::Duration};

use deadpool_postgres::Pool;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    scoring::Engine,
    store::{
        StoreError,
        catalog::{self, ActiveVersions},
    },
};

/// Why no engine could be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Nothing is active (migrations not applied, or every version retired).
    #[error("no active {0}: run migrations (the bootstrap model and default rules come with them)")]
    NothingActive(&'static str),
    /// The active version's row vanished between two reads.
    #[error("{0} {1} not found")]
    Missing(&'static str, String),
}

/// Builds the engine for `versions`, reusing the parts of `current` that did not change.
async fn build(
    pool: &Pool,
    versions: &ActiveVersions,
    current: Option<&Engine>,
) -> Result<Engine, EngineError> {
    let rules_version = versions.rules.as_deref().ok_or(EngineError::NothingActive("rule set"))?;
    let model_version = versions.model.as_deref().ok_or(EngineError::NothingActive("model"))?;
    let rules = match current.filter(|e| e.rules.version == rules_version) {
        Some(e) => e.rules.clone(),
        None => Arc::new(
            catalog::rule_set(pool, rules_version)
                .await?
                .ok_or_else(|| EngineError::Missing("rule set", rules_version.to_owned()))?,
        ),
    };
    let load = |version: &str| {
        let version = version.to_owned();
        async move {
            let reuse = current.and_then(|e| {
                [Some(&e.model), e.shadow.as_ref()]
                    .into_iter()
                    .flatten()
                    .find(|m| m.version == version)
                    .cloned()
            });
            match reuse {
                Some(m) => Ok(m),
                None => catalog::model(pool, &version)
                    .await?
                    .map(Arc::new)
                    .ok_or_else(|| EngineError::Missing("model", version.clone())),
            }
        }
    };
    let model = load(model_version).await?;
    let shadow = match versions.shadow.as_deref() {
        Some(v) => Some(load(v).await?),
        None => None,
    };
    Ok(Engine { rules, model, shadow })
}

/// Loads the active engine once (start-up, CLI).
pub async fn load(pool: &Pool) -> Result<Engine, EngineError> {
    let versions = catalog::active_versions(pool).await?;
    build(pool, &versions, None).await
}

/// The live engine and the task keeping it current.
#[derive(Debug)]
pub struct EngineWatch {
    rx: watch::Receiver<Arc<Engine>>,
    task: JoinHandle<()>,
}

impl EngineWatch {
    /// Loads the active engine and starts polling for changes every `every`.
    pub async fn start(pool: Pool, every: Duration) -> Result<Self, EngineError> {
        let engine = Arc::new(load(&pool).await?);
        log_versions(&engine, "loaded");
        let (tx, rx) = watch::channel(engine);
        let task = tokio::spawn(poll(pool, every, tx));
        Ok(Self { rx, task })
    }

    /// A handle that always reads the newest engine.
    pub fn receiver(&self) -> watch::Receiver<Arc<Engine>> {
        self.rx.clone()
    }

    /// The engine in use now.
    pub fn current(&self) -> Arc<Engine> {
        self.rx.borrow().clone()
    }
}

impl Drop for EngineWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn log_versions(engine: &Engine, what: &str) {
    tracing::info!(
        component = "engine",
        rules = %engine.rules.version,
        model = %engine.model.version,
        shadow = engine.shadow.as_ref().map(|m| m.version.as_str()).unwrap_or("-"),
        "scoring engine {what}"
    );
}

async fn poll(pool: Pool, every: Duration, tx: watch::Sender<Arc<Engine>>) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let current = tx.borrow().clone();
        let versions = match catalog::active_versions(&pool).await {
            Ok(v) => v,
            Err(error) => {
                tracing::warn!(component = "engine", %error, "could not check for new rules or models");
                continue;
            }
        };
        let same = versions.rules.as_deref() == Some(current.rules.version.as_str())
            && versions.model.as_deref() == Some(current.model.version.as_str())
            && versions.shadow.as_deref() == current.shadow.as_ref().map(|m| m.version.as_str());
        if same {
            continue;
        }
        match build(&pool, &versions, Some(&current)).await {
            Ok(engine) => {
                log_versions(&engine, "reloaded");
                metrics::counter!("engine_reloads_total", "outcome" => "ok").increment(1);
                if tx.send(Arc::new(engine)).is_err() {
                    return;
                }
            }
            Err(error) => {
                metrics::counter!("engine_reloads_total", "outcome" => "error").increment(1);
                tracing::error!(component = "engine", %error, "new rules or model unusable; keeping the current ones");
            }
        }
    }
}
