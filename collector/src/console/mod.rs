//! The responder's console: a web UI served by the collector itself, on
//! its own port (`serve --ui-listen`), over the store the gRPC API uses.
//!
//! Pages are rendered on the server (askama templates compiled into the
//! binary); a small script of our own adds live updates (server-sent
//! events) and keyboard triage, and every action also works as a plain
//! form without it. Nothing is fetched from elsewhere: the stylesheet and
//! the script are embedded, and the Content-Security-Policy allows only
//! this origin.
//!
//! Layout: [`auth`] says who a request comes from (session cookie, API
//! token or client certificate) and guards every change with the
//! session's CSRF token; [`pages`] renders what responders read;
//! [`actions`] applies what they do, each change attributed in the audit
//! trail; [`view`] formats what the templates show.
mod actions;
mod auth;
mod pages;
mod view;

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::Next,
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::{get, post},
    Extension, Router,
};
use futures_util::StreamExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;

use crate::{
    sql::SqlStore,
    tls::{incoming, ConnInfo, Listener, Revoked},
};

pub use auth::Identity;

/// How often the console looks for new alerts and changes to push to open
/// pages.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Most live-update streams open at once; past it a page falls back to
/// its own refresh button.
const MAX_STREAMS: usize = 256;
/// A browser session lasts this long from sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Longest form body read.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Most connections served at once; past it new ones are closed.
const MAX_CONNECTIONS: usize = 1024;
/// A live-update stream ends after this; the browser reconnects at once,
/// and its session is checked again (so a stream does not outlive a
/// sign-out or a removed account by more than this).
const STREAM_LIFETIME: Duration = Duration::from_secs(300);

/// What the console needs besides the store.
#[derive(Clone, Default)]
pub struct ConsoleOptions {
    /// The revoked certificates, rechecked on every request made with one.
    pub revoked: Option<Arc<Revoked>>,
}

/// The console's shared state.
pub struct Console {
    store: Arc<SqlStore>,
    revoked: Option<Arc<Revoked>>,
    /// Whether it is served over TLS (cookies are then `Secure`).
    tls: bool,
    /// Bumped when groups change: (newest audit entry, newest alert).
    changes: watch::Receiver<(i64, i64)>,
    streams: Arc<tokio::sync::Semaphore>,
    /// Sign-in attempts per name, and per client address.
    throttle: auth::Throttle,
    throttle_ip: auth::Throttle,
    /// Password checks in progress (argon2 is memory- and CPU-hard).
    hashing: Arc<tokio::sync::Semaphore>,
}

/// Serves the console on `listener` until `shutdown` resolves.
pub async fn run(
    listener: Listener,
    store: Arc<SqlStore>,
    opts: ConsoleOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let tls = listener.tls.is_some();
    let (tx, changes) = watch::channel((0, 0));
    let poller = tokio::spawn(poll_changes(store.clone(), tx));
    let console = Arc::new(Console {
        store,
        revoked: opts.revoked,
        tls,
        changes,
        streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
        throttle: auth::Throttle::new(auth::MAX_FAILURES),
        throttle_ip: auth::Throttle::new(auth::MAX_FAILURES_PER_CLIENT),
        hashing: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4)),
        )),
    });
    let app = router(console);
    let reloader = listener.tls.as_ref().map(|t| t.spawn_reloader());
    let mut conns = incoming(listener);
    let mut tasks = tokio::task::JoinSet::new();
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut shed = 0u64;
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            c = conns.next() => match c {
                Some(Ok(c)) => c,
                Some(Err(_)) => continue,
                None => break,
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            shed += 1;
            if shed.is_power_of_two() {
                tracing::warn!(
                    total = shed,
                    "console: too many connections; new ones closed"
                );
            }
            continue;
        };
        let info = tokio_rustls_conn_info(&conn);
        let svc = app.clone().layer(Extension(info));
        tasks.spawn(async move {
            let _permit = permit;
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(conn), svc)
                .await;
        });
        // Reap finished connections as we go.
        while tasks.try_join_next().is_some() {}
    }
    // Open pages hold live-update streams: end them rather than wait.
    tasks.abort_all();
    poller.abort();
    if let Some(r) = reloader {
        r.abort();
    }
}

fn tokio_rustls_conn_info(c: &crate::tls::Conn) -> ConnInfo {
    use tonic::transport::server::Connected as _;
    c.connect_info()
}

/// The routes: the sign-in page and the assets are public; everything
/// else passes [`auth::require`].
pub fn router(console: Arc<Console>) -> Router {
    let private = Router::new()
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/alerts") }),
        )
        .route("/alerts", get(pages::alerts))
        .route("/alerts/rows", get(pages::alert_rows))
        .route("/alerts/bulk", post(actions::bulk))
        .route("/alerts/{id}", get(pages::alert))
        .route("/alerts/{id}/action", post(actions::act))
        .route("/hosts", get(pages::hosts))
        .route("/hosts/{name}", get(pages::host))
        .route("/rules", get(pages::rules))
        .route("/pivot", get(pages::pivot))
        .route("/silences/{id}/expire", post(actions::expire_silence))
        .route("/events", get(events))
        .route("/logout", post(auth::logout))
        .route("/api/groups", get(pages::api_groups))
        .route("/api/whoami", get(auth::whoami))
        .route_layer(axum::middleware::from_fn_with_state(
            console.clone(),
            auth::require,
        ));
    Router::new()
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/static/console.css", get(css))
        .route("/static/console.js", get(js))
        .merge(private)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            security_headers,
        ))
        .with_state(console)
}

/// Headers on every answer: only this origin's scripts and styles, no
/// framing, no sniffing, no referrer outside, nothing cached; over TLS,
/// HTTPS only from now on.
async fn security_headers(State(c): State<Arc<Console>>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    if c.tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("static/console.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("static/console.js"),
    )
}

/// Watches the store for changes worth a refresh: a new audit entry
/// (opened, reopened, acknowledged, ...) or a newer alert in a group.
/// One poller for every open page; it reads two indexed maxima.
async fn poll_changes(store: Arc<SqlStore>, tx: watch::Sender<(i64, i64)>) {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.change_marks()).await {
            Ok(Ok(v)) => {
                tx.send_if_modified(|old| {
                    let changed = *old != v;
                    *old = v;
                    changed
                });
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "console: cannot read the change marks"),
            Err(_) => {}
        }
    }
}

/// Server-sent events: `changed` whenever groups change, for the pages to
/// refresh what they show.
async fn events(State(c): State<Arc<Console>>) -> Response {
    let Ok(permit) = c.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live views open; reload to refresh",
        )
            .into_response();
    };
    let mut rx = c.changes.clone();
    rx.mark_unchanged();
    let stream = WatchStream::from_changes(rx)
        .take_until(tokio::time::sleep(STREAM_LIFETIME))
        .map(move |(audit, alert)| {
            let _held = &permit;
            Ok::<_, std::convert::Infallible>(
                Event::default()
                    .event("changed")
                    .data(format!("{audit} {alert}")),
            )
        });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
