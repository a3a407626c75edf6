//! Assembling the Pingora server: `ServerConf` from the config, the proxy and admin
//! listeners (each behind `conn::Capped`/`conn::Guarded`), and the background services (host
//! resolution, access-log writer, and `lifecycle`: the start-up lines and the quick exit
//! once a shutdown has nothing left in flight).

use crate::access_log::{self, AccessLog};
use crate::admin::Admin;
use crate::background::layer_sync::LayerSync;
use crate::background::{Checker, Resolver};
use crate::conn::{Capped, Guarded};
use crate::lifecycle::{Announced, Lifecycle, ListenerInfo, StartReport};
use crate::managed::redis::RedisLayerStore;
use crate::provider::resolve::resolve_now;
use crate::proxy::Tollgate;
use crate::reload::{OnSighup, Reloader, Sources};
use crate::runtime::model::{Listener, ServerSettings};
use crate::runtime::{Gateway, SharedConfig};
use crate::state::Backends;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::connectors::http::Connector;
use pingora_core::connectors::ConnectorOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::ListenerConfig;
use pingora_core::protocols::l4::stream::L4BufferSettings;
// The server and its services through the `pingora` facade crate.
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::server::ShutdownWatch;
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::sync::Arc;
use std::time::Duration;

/// Command-line switches that Pingora acts on.
#[derive(Debug, Default, Clone)]
pub struct Switches {
    pub daemon: bool,
    pub upgrade: bool,
    /// `--ready-file PATH`: where the start-up report goes (`lifecycle::StartReport`).
    pub ready_file: Option<std::path::PathBuf>,
}

fn server_conf(s: &ServerSettings) -> ServerConf {
    ServerConf {
        threads: s.threads,
        work_stealing: s.work_stealing,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        error_log: s.error_log.clone(),
        user: s.user.clone(),
        group: s.group.clone(),
        daemon: s.daemon,
        grace_period_seconds: Some(s.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout_seconds),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        ca_file: s.ca_file.clone(),
        ..Default::default()
    }
}

fn tls_settings(l: &Listener) -> pingora_error::Result<Option<TlsSettings>> {
    let Some(tls) = &l.tls else { return Ok(None) };
    let mut settings = TlsSettings::intermediate(&tls.cert, &tls.key)?;
    if tls.http2 {
        settings.enable_h2();
    }
    Ok(Some(settings))
}

/// Read buffering in front of a client connection. Pingora's default is 64 KiB per
/// connection, most of the memory of an idle keep-alive or streaming client. Plain HTTP/1
/// reads its header and body into buffers of their own, so it needs none; TLS reads records
/// of up to 16 KiB, which one buffer of that size serves in one system call.
const PLAIN_READ_BUFFER: usize = 0;
const TLS_READ_BUFFER: usize = 16 * 1024;
/// Pingora's default: about one TCP segment.
const WRITE_BUFFER: usize = 1460;

fn add_listener<A>(service: &mut Service<A>, l: &Listener) -> pingora_error::Result<()> {
    let endpoint = ListenerConfig::tcp(l.address.as_str());
    let endpoint = match tls_settings(l)? {
        Some(settings) => endpoint
            .tls(settings)
            .l4_buffer(L4BufferSettings::new(TLS_READ_BUFFER, WRITE_BUFFER)),
        None => endpoint.l4_buffer(L4BufferSettings::new(PLAIN_READ_BUFFER, WRITE_BUFFER)),
    };
    service.add_listener(endpoint);
    Ok(())
}

/// How long a shutting-down process keeps waiting for the request header of connections it
/// accepted just before it stopped accepting (`conn::Guarded::drain`). On shutdown Pingora
/// drops every connection still waiting for its request header, to close idle keep-alive
/// connections; that also drops a connection accepted a moment before the accept loop
/// stopped whose request is still on the wire, which a client sees as a reset during a
/// zero-downtime upgrade.
pub const DRAIN_ACCEPTED: Duration = Duration::from_secs(1);

/// After the shutdown broadcast, how long `lifecycle` lets connections accepted just before
/// it register before it counts what is in flight: a plain connection registers at once, a
/// TLS one after its handshake.
const SETTLE_PLAIN: Duration = Duration::from_millis(100);
const SETTLE_TLS: Duration = DRAIN_ACCEPTED;

fn describe(l: &Listener, kind: &str) -> ListenerInfo {
    let what = match &l.tls {
        None => kind.to_string(),
        Some(t) if t.http2 => format!("{kind}, TLS, HTTP/2"),
        Some(_) => format!("{kind}, TLS"),
    };
    ListenerInfo {
        address: l.address.clone(),
        what,
    }
}

/// The usage rollups of `gateway` (`analytics:`), their file in the state directory unless
/// the config names one.
fn analytics_of(gateway: &Gateway, config_path: &str) -> crate::analytics::Analytics {
    let a = &gateway.settings.analytics;
    let dir = crate::runtime::paths::state_dir(config_path);
    let path = dir.join(a.path.as_deref().unwrap_or("analytics.db"));
    crate::analytics::Analytics::new(a.is_enabled(), path, a.recent_requests(), a.retention())
}

/// Starts the rollups' thread once the server runs (after daemonising), adding to the
/// fleet's rollups when the stores have a Redis.
struct StartAnalytics(Arc<crate::analytics::Analytics>, Arc<Backends>);

#[async_trait]
impl BackgroundService for StartAnalytics {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let backends = self.1.clone();
        // Opening the stores touches the disk: keep it off the async workers.
        let redis = tokio::task::spawn_blocking(move || backends.stores().redis.clone())
            .await
            .ok()
            .flatten();
        if let Err(e) = self.0.start(redis) {
            log::error!("analytics: cannot start its thread: {e}");
        }
        let _ = shutdown.changed().await;
    }
}

/// Opens the stores as soon as the server runs (after daemonising) and loads balances.
struct OpenStores(Arc<Backends>);

#[async_trait]
impl BackgroundService for OpenStores {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let backends = self.0.clone();
        // Opening touches the disk: keep it off the async workers.
        let opened = tokio::task::spawn_blocking(move || {
            backends.stores();
            backends
        })
        .await;
        if let Ok(backends) = opened {
            backends.quotas().preload().await;
        }
        // Done; stay until the server stops (a service that returns is logged as exited).
        let _ = shutdown.changed().await;
    }
}

/// Pingora's server for `gateway`'s `server:` settings and the command line's switches,
/// bootstrapped (on an upgrade: the listening sockets taken over from the old process).
fn pingora_server(gateway: &Gateway, switches: &Switches) -> Server {
    let mut conf = server_conf(&gateway.server);
    conf.daemon = conf.daemon || switches.daemon;
    let opt = Opt {
        upgrade: switches.upgrade,
        daemon: conf.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    server
}

/// Build the server for `gateway`; the caller runs it with `run_forever`. The composition
/// root: the shared state, the proxy and admin services, and the background services.
pub fn build(
    (gateway, file, layer): (Gateway, crate::settings::Settings, crate::managed::Layer),
    config_path: &str,
    switches: Switches,
) -> Result<Server, Box<dyn std::error::Error>> {
    resolve_now(&gateway.providers);
    let mut server = pingora_server(&gateway, &switches);
    let conf = server.configuration.clone();

    let access_log = Arc::new(AccessLog::new(
        gateway.access_log.clone(),
        gateway.access_log_buffer,
    ));
    let backends = Arc::new(Backends::new(gateway.store.clone()));
    if !conf.daemon {
        // Fail at start on a bad path or URL; a daemon opens them after the fork.
        backends.open_now()?;
    }
    let analytics = Arc::new(analytics_of(&gateway, config_path));
    let alerts = Arc::new(std::sync::Mutex::new(crate::alerts::Alerts::default()));
    let listeners = Listeners::of(&gateway, &switches);
    let client = gateway.client;
    let grace = Duration::from_secs(gateway.server.grace_period_seconds);
    let (sources, shared_layer) =
        layer_sources(file, layer, config_path, gateway.store.redis.as_ref())?;
    let config: SharedConfig = Arc::new(ArcSwap::from_pointee(gateway));
    let reloader = Reloader::new(config.clone(), config_path, sources);
    let shared = Shared {
        config: config.clone(),
        backends: backends.clone(),
        analytics: analytics.clone(),
        alerts: alerts.clone(),
        conf: conf.clone(),
        max_connections: client.max_connections,
    };

    let mut connections = Vec::new();
    let proxy = proxy_service(&shared, &access_log, client.keepalive_timeout, &listeners)?;
    connections.push(proxy.inner.app_logic().map(|a| a.connections()));
    server.add_service(proxy);
    if let Some(l) = &listeners.admin {
        let admin = admin_service(&shared, &reloader, l, &listeners)?;
        connections.push(admin.inner.app_logic().map(|a| a.connections()));
        server.add_service(admin);
    }
    let connections = connections.into_iter().flatten().collect();
    add_watchers(&mut server, &shared);
    let sync = LayerSync {
        reloader: reloader.clone(),
        shared: shared_layer,
    };
    server.add_service(background_service("stored API layer", sync));
    server.add_service(background_service("reload on SIGHUP", OnSighup(reloader)));
    server.add_service(background_service(
        "access log",
        access_log::Writer(access_log.clone()),
    ));
    let phases = server.watch_execution_phase();
    server.add_service(background_service(
        "lifecycle",
        Lifecycle {
            upgrade: switches.upgrade,
            connections,
            access_log,
            analytics: analytics.clone(),
            backends,
            grace,
            settle: if listeners.any_tls {
                SETTLE_TLS
            } else {
                SETTLE_PLAIN
            },
            phases: std::sync::Mutex::new(Some(phases)),
        },
    ));
    Ok(server)
}

/// The background services that watch and serve the shared state: health checks, the
/// resolver, opening the stores, usage rollups and alerts.
fn add_watchers(server: &mut Server, shared: &Shared) {
    let config = &shared.config;
    server.add_service(background_service(
        "health checks",
        Checker {
            config: config.clone(),
            connector: Connector::new(Some(ConnectorOptions::from_server_conf(&shared.conf))),
        },
    ));
    server.add_service(background_service(
        "resolver",
        Resolver {
            config: config.clone(),
        },
    ));
    let backends = &shared.backends;
    server.add_service(background_service("stores", OpenStores(backends.clone())));
    server.add_service(background_service(
        "usage rollups",
        StartAnalytics(shared.analytics.clone(), backends.clone()),
    ));
    server.add_service(background_service(
        "alerts",
        crate::background::alerting::Alerting {
            config: config.clone(),
            analytics: shared.analytics.clone(),
            alerts: shared.alerts.clone(),
            backends: backends.clone(),
        },
    ));
}

/// What the proxy and admin services share.
struct Shared {
    config: SharedConfig,
    backends: Arc<Backends>,
    analytics: Arc<crate::analytics::Analytics>,
    alerts: Arc<std::sync::Mutex<crate::alerts::Alerts>>,
    conf: Arc<pingora_core::server::configuration::ServerConf>,
    max_connections: usize,
}

/// The listeners of the config, and the start-up report they fill in.
struct Listeners {
    proxy: Vec<Listener>,
    admin: Option<Listener>,
    any_tls: bool,
    report: Arc<StartReport>,
}

impl Listeners {
    fn of(gateway: &Gateway, switches: &Switches) -> Self {
        let proxy = gateway.proxy_listeners.clone();
        let admin = gateway.admin_listener.clone();
        let mut all: Vec<ListenerInfo> = proxy.iter().map(|l| describe(l, "proxy")).collect();
        all.extend(admin.iter().map(|l| describe(l, "admin")));
        let any_tls = proxy.iter().chain(admin.iter()).any(|l| l.tls.is_some());
        Listeners {
            report: StartReport::new(switches.ready_file.clone(), &all),
            proxy,
            admin,
            any_tls,
        }
    }
}

type ProxyApp = Capped<Guarded<pingora_proxy::HttpProxy<Tollgate>>>;
type AdminApp = Capped<Guarded<Admin>>;

/// The proxy service on every proxy listener.
fn proxy_service(
    shared: &Shared,
    access_log: &Arc<AccessLog>,
    keepalive_timeout: Duration,
    listeners: &Listeners,
) -> Result<Announced<Service<ProxyApp>>, Box<dyn std::error::Error>> {
    let mut inner = pingora_proxy::HttpProxy::new(
        Tollgate {
            config: shared.config.clone(),
            access_log: access_log.clone(),
            analytics: shared.analytics.clone(),
            backends: shared.backends.clone(),
            connector: Connector::new(Some(ConnectorOptions::from_server_conf(&shared.conf))),
        },
        shared.conf.clone(),
    );
    inner.handle_init_modules();
    // HTTP/2 connections (TLS listeners with `http2`) are closed after the keep-alive idle
    // timeout too; `conn::Guarded` covers HTTP/1.
    let mut options = pingora_core::apps::HttpServerOptions::default();
    options.h2_idle_timeout = Some(keepalive_timeout);
    inner.server_options = Some(options);
    let app = Capped::new(
        Guarded {
            app: Arc::new(inner),
            config: shared.config.clone(),
            drain: DRAIN_ACCEPTED,
        },
        shared.max_connections,
    );
    let mut proxy = Service::new("tollgate proxy".to_string(), app);
    for l in &listeners.proxy {
        add_listener(&mut proxy, l)?;
    }
    Ok(Announced {
        inner: proxy,
        listeners: listeners
            .proxy
            .iter()
            .map(|l| describe(l, "proxy"))
            .collect(),
        report: listeners.report.clone(),
    })
}

/// The API layer's sources, and its shared store when there is one (to follow).
type LayerSources = (Arc<Sources>, Option<Arc<RedisLayerStore>>);

/// Where the API layer is kept: the shared Redis when one is configured (with a local copy
/// in the state directory, what a start reads), else the state directory's files.
fn layer_sources(
    file: crate::settings::Settings,
    layer: crate::managed::Layer,
    config_path: &str,
    redis: Option<&crate::store::redis::RedisSettings>,
) -> Result<LayerSources, Box<dyn std::error::Error>> {
    let dir = crate::runtime::paths::state_dir(config_path);
    let files = crate::managed::files::FileStore::new(dir);
    let Some(redis) = redis else {
        return Ok((Arc::new(Sources::local(file, layer, files)), None));
    };
    let store = Arc::new(RedisLayerStore::new(redis)?);
    let sources = Sources::shared(file, layer, store.clone(), files);
    Ok((Arc::new(sources), Some(store)))
}

/// The admin service on the admin listener.
fn admin_service(
    shared: &Shared,
    reloader: &Reloader,
    l: &Listener,
    listeners: &Listeners,
) -> Result<Announced<Service<AdminApp>>, Box<dyn std::error::Error>> {
    let app = Capped::new(
        Guarded {
            app: Arc::new(Admin::new(
                shared.config.clone(),
                reloader.clone(),
                l.token.clone(),
                shared.backends.clone(),
                shared.analytics.clone(),
                shared.alerts.clone(),
            )),
            config: shared.config.clone(),
            drain: Duration::ZERO,
        },
        shared.max_connections,
    );
    let mut admin = Service::new("tollgate admin".to_string(), app);
    add_listener(&mut admin, l)?;
    Ok(Announced {
        inner: admin,
        listeners: vec![describe(l, "admin")],
        report: listeners.report.clone(),
    })
}
