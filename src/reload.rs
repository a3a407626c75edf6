//! Installing a new config: a hot reload (SIGHUP or `POST /admin/reload` re-reads the YAML
//! file) or a management API write (a new API layer, `crate::managed`). Both build the
//! snapshot from the file's settings merged with the API layer, under one lock, so neither
//! loses the other's change.
//!
//! A valid file becomes the new snapshot for new requests (in-flight ones keep the `Arc`
//! they started with); keys that did not change keep their health; new host names are
//! resolved before the swap. An invalid file is rejected with the error logged and returned,
//! and the old snapshot keeps serving. Settings that live in sockets or threads (listeners,
//! `server`, the access log, the stores) cannot change live: the reload reports them as
//! needing an upgrade, compared with what the process is running (the settings it started
//! with), not with the previous file, so a change stays reported until an upgrade applies
//! it. The admin token is read from the current snapshot, so a reload rotates it at once.

use crate::managed::{self, edit::Outcome, Change, Layer, LayerStore, ManagedError};
use crate::provider::resolve::resolve_now;
use crate::runtime::model::Listener;
use crate::runtime::{self, ConfigError, Gateway, SharedConfig};
use crate::settings::{self, Settings};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::Arc;

#[derive(Clone)]
pub struct Reloader {
    pub config: SharedConfig,
    pub path: Arc<str>,
    /// What the process applied at start and cannot change without an upgrade.
    pub running: Arc<Running>,
    pub sources: Arc<Sources>,
}

/// What the running config is made of, as last installed.
pub struct Sources {
    /// The operator's file.
    pub file: ArcSwap<Settings>,
    /// The API layer.
    pub layer: ArcSwap<Layer>,
    /// Where the layer is kept.
    pub store: Arc<dyn LayerStore>,
    /// The local copy of a shared layer (`None` when `store` is the local files).
    pub cache: Option<managed::files::FileStore>,
    /// Whether a shared store answers (`None` for the local files).
    pub health: Option<Arc<managed::redis::Health>>,
    /// Held while a new config is built and installed: one at a time.
    lock: tokio::sync::Mutex<()>,
}

impl Sources {
    /// The layer kept in the state directory's files.
    pub fn local(file: Settings, layer: Layer, files: managed::files::FileStore) -> Self {
        Self::new(file, layer, Arc::new(files), None, None)
    }

    /// The layer kept in a shared Redis, with a local copy in `cache`.
    pub fn shared(
        file: Settings,
        layer: Layer,
        store: Arc<managed::redis::RedisLayerStore>,
        cache: managed::files::FileStore,
    ) -> Self {
        let health = store.health.clone();
        Self::new(file, layer, store, Some(cache), Some(health))
    }

    fn new(
        file: Settings,
        layer: Layer,
        store: Arc<dyn LayerStore>,
        cache: Option<managed::files::FileStore>,
        health: Option<Arc<managed::redis::Health>>,
    ) -> Self {
        let up = health.as_ref().is_none_or(|h| h.up());
        crate::metrics::METRICS.config_store_up.set(i64::from(up));
        crate::metrics::METRICS
            .config_api_revision
            .set(i64::try_from(layer.revision).unwrap_or(i64::MAX));
        Sources {
            file: ArcSwap::from_pointee(file),
            layer: ArcSwap::from_pointee(layer),
            store,
            cache,
            health,
            lock: tokio::sync::Mutex::new(()),
        }
    }
}

/// The file at `path` and the API layer kept beside it (the state directory's
/// `api-state.yaml`), merged and validated: what a start, `-t` and `config export` run.
pub fn load_with_layer(path: &str) -> Result<(Gateway, Settings, Layer), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_string(),
        source,
    })?;
    let file = settings::from_yaml(&text).map_err(|message| ConfigError::Syntax {
        path: path.to_string(),
        message,
    })?;
    let store = managed::files::FileStore::new(runtime::paths::state_dir(path));
    let layer = store
        .load_blocking()
        .map_err(|e| ConfigError::field(managed::files::STATE_FILE, e.to_string()))?
        .unwrap_or_default();
    let gateway =
        build_merged(&file, &layer, path, None).map_err(|e| blame_layer(e, &file, &layer, path))?;
    Ok((gateway, file, layer))
}

/// When the file builds alone but not with the API's objects, say that an API object is at
/// fault (say, a route the API created uses a provider the file no longer defines).
fn blame_layer(e: ConfigError, file: &Settings, layer: &Layer, path: &str) -> ConfigError {
    if *layer == Layer::default() || runtime::build(file, path, None).is_err() {
        return e;
    }
    ConfigError::field(
        managed::files::STATE_FILE,
        format!(
            "the management API's objects (revision {}) do not fit this config file: {e}; \
             change the file, or fix or delete the object through the API",
            layer.revision
        ),
    )
}

/// The snapshot of `file` merged with `layer`.
fn build_merged(
    file: &Settings,
    layer: &Layer,
    path: &str,
    previous: Option<&Gateway>,
) -> Result<Gateway, ConfigError> {
    let merged = managed::merge(file, layer);
    for name in &merged.shadowed {
        log::warn!("the API's {name} is left out: the config file defines it");
    }
    runtime::build(&merged.settings, path, previous)
}

/// The settings a reload cannot apply, as this process runs them (taken at start).
#[derive(Debug)]
pub struct Running {
    listeners: Listeners,
    server: runtime::model::ServerSettings,
    access_log: (runtime::model::AccessLogTarget, usize),
    store: crate::store::StoreSettings,
    max_connections: usize,
}

/// Proxy listeners and the admin listener, without the admin token and the console switch
/// (both applied live).
type Listeners = (Vec<Listener>, Option<Listener>);

fn listeners(g: &Gateway) -> Listeners {
    let without_token = |l: &Listener| Listener {
        token: None,
        console: true,
        ..l.clone()
    };
    (
        g.proxy_listeners.iter().map(without_token).collect(),
        g.admin_listener.as_ref().map(without_token),
    )
}

impl Running {
    /// The settings of `g`, the config the process starts with.
    pub fn of(g: &Gateway) -> Self {
        Running {
            listeners: listeners(g),
            server: g.server.clone(),
            access_log: (g.access_log.clone(), g.access_log_buffer),
            store: g.store.clone(),
            max_connections: g.client.max_connections,
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct ReloadReport {
    /// Changed settings that take effect only after a binary upgrade or restart.
    pub needs_upgrade: Vec<&'static str>,
}

/// Settings of `new` that differ from what the process runs.
fn needs_upgrade(running: &Running, new: &Gateway) -> Vec<&'static str> {
    let mut out = Vec::new();
    if running.listeners != listeners(new) {
        out.push("listeners");
    }
    if running.server != new.server {
        out.push("server");
    }
    if running.access_log != (new.access_log.clone(), new.access_log_buffer) {
        out.push("access_log");
    }
    if !running.store.same_stores(&new.store) {
        out.push("store/redis");
    }
    // The connection cap is fixed when the listeners start; the other `client:` settings
    // apply to the next connection or request.
    if running.max_connections != new.client.max_connections {
        out.push("client.max_connections");
    }
    // The trace queue is sized when its thread starts (the first traced request).
    let queue = crate::otel::queue_capacity();
    if queue.is_some_and(|q| new.tracing.as_ref().is_some_and(|t| t.queue != q)) {
        out.push("tracing.queue");
    }
    out
}

impl Reloader {
    /// A reloader for the process that starts with the config in `config`.
    pub fn new(config: SharedConfig, path: &str, sources: Arc<Sources>) -> Self {
        let running = Arc::new(Running::of(&config.load()));
        Reloader {
            config,
            path: Arc::from(path),
            running,
            sources,
        }
    }

    /// Build the snapshot of `file` and `layer` (blocking: name resolution).
    fn prepare(&self, file: &Settings, layer: &Layer) -> Result<Gateway, ConfigError> {
        let old = self.config.load_full();
        let new = build_merged(file, layer, &self.path, Some(&old))?;
        resolve_now(&new.providers);
        Ok(new)
    }

    /// Swap in `new`, made of `file` and `layer`.
    fn install(&self, new: Gateway, file: Settings, layer: Layer) -> ReloadReport {
        let report = ReloadReport {
            needs_upgrade: needs_upgrade(&self.running, &new),
        };
        self.config.store(Arc::new(new));
        self.sources.file.store(Arc::new(file));
        crate::metrics::METRICS
            .config_api_revision
            .set(i64::try_from(layer.revision).unwrap_or(i64::MAX));
        self.sources.layer.store(Arc::new(layer));
        report
    }

    /// Load, validate and swap in the config file (blocking: file I/O and name resolution).
    fn reload_blocking(&self) -> Result<ReloadReport, ConfigError> {
        let text = std::fs::read_to_string(&*self.path).map_err(|source| ConfigError::Read {
            path: self.path.to_string(),
            source,
        })?;
        let file = settings::from_yaml(&text).map_err(|message| ConfigError::Syntax {
            path: self.path.to_string(),
            message,
        })?;
        let layer = Layer::clone(&self.sources.layer.load());
        let new = self
            .prepare(&file, &layer)
            .map_err(|e| blame_layer(e, &file, &layer, &self.path))?;
        let report = self.install(new, file, layer);
        if report.needs_upgrade.is_empty() {
            log::info!("config {} reloaded", self.path);
        } else {
            log::warn!(
                "config {} reloaded; changes to {} take effect only after an upgrade",
                self.path,
                report.needs_upgrade.join(", ")
            );
        }
        Ok(report)
    }

    /// Reload the file, off the async runtime's worker threads.
    pub async fn reload(&self) -> Result<ReloadReport, ConfigError> {
        let _one_at_a_time = self.sources.lock.lock().await;
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.reload_blocking()).await {
            Ok(result) => result,
            Err(e) => Err(ConfigError::field("reload", e.to_string())),
        }
    }

    /// A management API write: `edit` changes a copy of the layer (it sees the file's
    /// settings and may refuse); the merged config is validated by the same build as the
    /// file, the new layer is stored (durably) and only then swapped in. Nothing changes
    /// on any error. Returns what the edit did and the new layer revision.
    pub async fn write(
        &self,
        who: &str,
        edit: impl FnOnce(&mut Layer, &Settings) -> Result<Outcome, ManagedError>,
    ) -> Result<(Outcome, u64), ManagedError> {
        let _one_at_a_time = self.sources.lock.lock().await;
        let file = Settings::clone(&self.sources.file.load());
        let old = self.sources.layer.load_full();
        let mut layer = Layer::clone(&old);
        let outcome = edit(&mut layer, &file)?;
        layer.revision = old.revision + 1;
        let (this, f, l) = (self.clone(), file.clone(), layer.clone());
        let new = tokio::task::spawn_blocking(move || this.prepare(&f, &l))
            .await
            .map_err(|e| ManagedError::Storage(e.to_string()))?
            .map_err(|e| ManagedError::Invalid(e.to_string()))?;
        let change = Change::now(
            layer.revision,
            who,
            outcome.action,
            outcome.kind,
            &outcome.name,
        );
        self.sources
            .store
            .commit(old.revision, &layer, &change)
            .await?;
        if let Some(cache) = self.sources.cache.clone() {
            let copy = layer.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = cache.save_blocking(&copy) {
                    log::warn!("management API: local copy not written: {e}");
                }
            });
        }
        let revision = layer.revision;
        self.install(new, file, layer);
        log::info!(
            "management API: {who} {} {} `{}` (revision {revision})",
            outcome.action,
            outcome.kind,
            outcome.name
        );
        Ok((outcome, revision))
    }

    /// Add a change that is not to the layer (a reload, a quota balance) to the audit log.
    pub async fn record(&self, who: &str, action: &str, kind: &str, name: &str) {
        let revision = self.sources.layer.load().revision;
        let change = Change::now(revision, who, action, kind, name);
        if let Err(e) = self.sources.store.record(&change).await {
            log::warn!("audit log: {action} {kind} `{name}` by {who} not recorded: {e}");
        }
    }

    /// Install a layer another instance stored (a shared store), if it validates here.
    pub async fn adopt(&self, layer: Layer) -> Result<(), ManagedError> {
        let _one_at_a_time = self.sources.lock.lock().await;
        if layer.revision == self.sources.layer.load().revision {
            return Ok(());
        }
        let file = Settings::clone(&self.sources.file.load());
        let (this, f, l) = (self.clone(), file.clone(), layer.clone());
        let new = tokio::task::spawn_blocking(move || this.prepare(&f, &l))
            .await
            .map_err(|e| ManagedError::Storage(e.to_string()))?
            .map_err(|e| ManagedError::Invalid(e.to_string()))?;
        if let Some(cache) = self.sources.cache.clone() {
            let copy = layer.clone();
            let _ = tokio::task::spawn_blocking(move || cache.save_blocking(&copy)).await;
        }
        log::info!(
            "management API: applied revision {} from {}",
            layer.revision,
            self.sources.store.describe()
        );
        self.install(new, file, layer);
        Ok(())
    }
}

/// Reloads on SIGHUP.
pub struct OnSighup(pub Reloader);

#[async_trait]
impl BackgroundService for OnSighup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGHUP: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    match self.0.reload().await {
                        Ok(_) => self.0.record("SIGHUP", "reload", "config file", &self.0.path).await,
                        Err(e) => log::error!("config reload rejected, the previous config keeps serving: {e}"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BASE: &str = r#"
listeners:
  proxy: [{address: "127.0.0.1:8080"}]
  admin: {address: "127.0.0.1:9090", token: old}
providers:
  - {name: mock, type: openai-compatible, base_url: "http://127.0.0.1:8090/v1", api_keys: [k]}
routes:
  - {name: default, models: [{model: "mock-*", targets: [{provider: mock}]}]}
"#;

    fn upgrade(from: &str, to: &str) -> Vec<&'static str> {
        let running = Running::of(&runtime::parse(from, "t.yaml", None).unwrap());
        needs_upgrade(&running, &runtime::parse(to, "t.yaml", None).unwrap())
    }

    #[test]
    fn needs_upgrade_compares_what_runs() {
        assert!(upgrade(BASE, BASE).is_empty());
        // The admin token applies live; a default written out is no change.
        assert!(upgrade(BASE, &BASE.replace("token: old", "token: new")).is_empty());
        assert!(upgrade(BASE, &format!("server: {{threads: 1}}\n{BASE}")).is_empty());
        assert_eq!(
            upgrade(BASE, &format!("server: {{threads: 2}}\n{BASE}")),
            ["server"]
        );
        assert_eq!(upgrade(BASE, &BASE.replace("8080", "8081")), ["listeners"]);
        assert_eq!(
            upgrade(BASE, &format!("access_log: {{path: off}}\n{BASE}")),
            ["access_log"]
        );
        assert_eq!(
            upgrade(BASE, &format!("client: {{max_connections: 5}}\n{BASE}")),
            ["client.max_connections"]
        );
    }
}
