//! Who a console request comes from, and whether they may do what they
//! ask.
//!
//! Three ways in: a session cookie after signing in with a password; an
//! API token (`Authorization: Bearer vgt_...`) for scripts; a client
//! certificate of the fleet's CA with the responder or admin role, which
//! gets a session of its own without a password. Every change needs the
//! session's CSRF token in the form (API tokens are not sent by browsers
//! on their own, so they need none). Cookies are HttpOnly,
//! SameSite=Strict, and Secure over TLS; only a digest of each token is
//! stored.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use askama::Template;
use axum::{
    extract::{Query, Request, State},
    http::{header, HeaderMap, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
    Extension, Json,
};

use super::{view, Console, SESSION_TTL};
use crate::{
    accounts::{self, Credential, CredentialKind, Role},
    groups::Actor,
    store::now_ns,
    tls::ConnInfo,
};

/// The session cookie.
const SESSION_COOKIE: &str = "vigil_session";
/// The sign-in form's own CSRF cookie (before there is a session).
const LOGIN_COOKIE: &str = "vigil_login";
/// The form field every change carries.
pub const CSRF_FIELD: &str = "csrf_token";
/// Sign-in attempts of one name in a minute before it is held off.
pub const MAX_FAILURES: u32 = 5;
/// Sign-in attempts from one address in a minute.
pub const MAX_FAILURES_PER_CLIENT: u32 = 30;
/// How long a name is held off after [`MAX_FAILURES`].
const HOLD_OFF: Duration = Duration::from_secs(60);
/// Keys tracked at once; past it the oldest are forgotten.
const MAX_TRACKED: usize = 10_000;

/// The person (or script) behind a request.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: String,
    pub role: Role,
    pub kind: CredentialKind,
    /// The session's CSRF token (empty for API tokens).
    pub csrf: String,
    /// The client's address.
    pub client: String,
}

impl Identity {
    /// How the audit trail names them: `console:alice` (password),
    /// `token:alice` (API token), `responder:alice` (certificate).
    pub fn actor(&self) -> Actor {
        let name = match self.kind {
            CredentialKind::Session => format!("console:{}", self.user),
            CredentialKind::Api => format!("token:{}", self.user),
            CredentialKind::Certificate => format!("{}:{}", self.role.name(), self.user),
        };
        Actor {
            name,
            client: format!("{} (console)", self.client),
        }
    }

    /// Refuses a change whose form lacks this session's CSRF token, or
    /// that this role may not make.
    pub fn may_change(&self, form: &[(String, String)]) -> Result<(), view::Failure> {
        if self.kind != CredentialKind::Api {
            let sent = form
                .iter()
                .find(|(k, _)| k == CSRF_FIELD)
                .map(|(_, v)| v.as_str());
            if !sent.is_some_and(|t| accounts::same_secret(t, &self.csrf)) {
                return Err(view::Failure::new(
                    StatusCode::FORBIDDEN,
                    "This form is out of date or did not come from the console (no valid CSRF token). Reload the page and try again.",
                ));
            }
        }
        if !self.role.may_triage() {
            return Err(view::Failure::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{} has the {} role, which may read but not change anything.",
                    self.user,
                    self.role.name()
                ),
            ));
        }
        Ok(())
    }
}

/// Sign-in attempts per key (a name, or a client address), to hold off
/// guessing. An attempt counts when it starts, so guesses made in
/// parallel count too; a success forgets the key.
pub struct Throttle {
    tries: Mutex<HashMap<String, (u32, Instant)>>,
    /// Attempts a key may make in [`HOLD_OFF`].
    max: u32,
}

impl Throttle {
    pub fn new(max: u32) -> Throttle {
        Throttle {
            tries: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// Counts an attempt for `key`; false when the key is held off.
    fn attempt(&self, key: &str) -> bool {
        let mut map = self.tries.lock().expect("throttle lock");
        if let Some(e) = map.get_mut(key) {
            if e.1.elapsed() >= HOLD_OFF {
                *e = (0, Instant::now());
            }
            if e.0 >= self.max {
                return false;
            }
            e.0 += 1;
            e.1 = Instant::now();
            return true;
        }
        if map.len() >= MAX_TRACKED {
            // Forget the stale first; then, under a flood of names, the
            // oldest: never the whole map, which would free a held key.
            map.retain(|_, (_, at)| at.elapsed() < HOLD_OFF);
            if map.len() >= MAX_TRACKED {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    map.remove(&k);
                }
            }
        }
        map.insert(key.to_string(), (1, Instant::now()));
        true
    }

    fn succeeded(&self, key: &str) {
        self.tries.lock().expect("throttle lock").remove(key);
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(c: &Console, name: &str, value: &str, max_age: Duration) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if c.tls { "; Secure" } else { "" }
    )
}

fn serial_hex(p: &crate::tls::Peer) -> String {
    p.serial.iter().map(|b| format!("{b:02x}")).collect()
}

fn client_of(info: &ConnInfo) -> String {
    info.remote
        .map_or_else(|| "unknown".into(), |a| a.to_string())
}

/// Runs the store off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, view::Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| view::Failure::internal(e.to_string()))?
        .map_err(|e| view::Failure::internal(e.to_string()))
}

/// Lets a request through with its [`Identity`] when it has one; sends a
/// browser to the sign-in page, and answers 401 to anything else.
pub async fn require(
    State(c): State<Arc<Console>>,
    Extension(info): Extension<ConnInfo>,
    mut req: Request,
    next: Next,
) -> Response {
    match identify(&c, &info, req.headers()).await {
        Ok(Some((me, new_cookie))) => {
            req.extensions_mut().insert(me);
            let mut res = next.run(req).await;
            if let Some(v) = new_cookie.and_then(|v| v.parse().ok()) {
                res.headers_mut().append(header::SET_COOKIE, v);
            }
            res
        }
        Ok(None) => {
            let wants_page = req.method() == Method::GET
                && !req.uri().path().starts_with("/api/")
                && req.uri().path() != "/events";
            if wants_page {
                let next = req.uri().path_and_query().map_or("/alerts", |p| p.as_str());
                Redirect::to(&format!("/login?next={}", view::url_encode(next))).into_response()
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "sign in at /login, or send an API token (Authorization: Bearer ...)\n",
                )
                    .into_response()
            }
        }
        Err(f) => f.into_response(),
    }
}

/// The request's identity, and a cookie to set when a certificate's
/// session was just made.
async fn identify(
    c: &Arc<Console>,
    info: &ConnInfo,
    headers: &HeaderMap,
) -> Result<Option<(Identity, Option<String>)>, view::Failure> {
    let client = client_of(info);
    let peer = info
        .peer
        .clone()
        .filter(|p| !c.revoked.as_ref().is_some_and(|r| r.contains(&p.serial)));
    let cert_role = peer
        .as_ref()
        .and_then(|p| p.role)
        .and_then(Role::of_certificate);
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let (token, api) = match bearer {
        Some(t) => (Some(t), true),
        None => (cookie(headers, SESSION_COOKIE), false),
    };
    if let Some(token) = token {
        let store = c.store.clone();
        let digest = accounts::token_digest(&token);
        let found = blocking(move || store.credential(&digest)).await?;
        if let Some(cred) = found {
            let kind_ok = match cred.kind {
                CredentialKind::Api => api,
                CredentialKind::Session => !api,
                // A certificate's session is good only with the
                // certificate itself, still presented and unrevoked.
                CredentialKind::Certificate => {
                    !api && peer
                        .as_ref()
                        .is_some_and(|p| p.name == cred.user && serial_hex(p) == cred.label)
                        && cert_role == Some(cred.role)
                }
            };
            if kind_ok {
                return Ok(Some((
                    Identity {
                        user: cred.user,
                        role: cred.role,
                        kind: cred.kind,
                        csrf: cred.csrf,
                        client,
                    },
                    None,
                )));
            }
        }
        if api {
            return Ok(None);
        }
    }
    let (Some(peer), Some(role)) = (peer, cert_role) else {
        return Ok(None);
    };
    // A browser sends its certificate with requests other sites make it
    // send, but not its SameSite cookie: a session is made only for the
    // console's own pages, so another site cannot make sessions that push
    // out the real one.
    let fetch_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    if !matches!(fetch_site, "none" | "same-origin") {
        return Ok(None);
    }
    // A responder's certificate: a session of its own, good only with
    // this very certificate.
    let (token, mut cred) = new_session(CredentialKind::Certificate, &peer.name, role)?;
    cred.label = serial_hex(&peer);
    let store = c.store.clone();
    let digest = accounts::token_digest(&token);
    let saved = cred.clone();
    blocking(move || store.add_credential(&digest, &saved)).await?;
    tracing::info!(user = %peer.name, role = role.name(), %client, "console: signed in with a client certificate");
    Ok(Some((
        Identity {
            user: cred.user,
            role,
            kind: CredentialKind::Certificate,
            csrf: cred.csrf,
            client,
        },
        Some(set_cookie(c, SESSION_COOKIE, &token, SESSION_TTL)),
    )))
}

fn new_session(
    kind: CredentialKind,
    user: &str,
    role: Role,
) -> Result<(String, Credential), view::Failure> {
    let token = accounts::new_token("").map_err(|e| view::Failure::internal(e.to_string()))?;
    let csrf = accounts::new_token("").map_err(|e| view::Failure::internal(e.to_string()))?;
    Ok((
        token,
        Credential {
            kind,
            user: user.to_string(),
            role,
            csrf,
            label: String::new(),
            expires_ns: now_ns() + SESSION_TTL.as_nanos() as i64,
        },
    ))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    error: String,
    username: String,
}

#[derive(serde::Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Only a path on this console: never a redirect elsewhere.
fn local_path(next: Option<&str>) -> String {
    next.and_then(view::local_path).unwrap_or("/alerts").into()
}

fn login_form(
    c: &Console,
    status: StatusCode,
    next: String,
    error: String,
    username: String,
) -> Response {
    let csrf = match accounts::new_token("") {
        Ok(t) => t,
        Err(e) => return view::Failure::internal(e.to_string()).into_response(),
    };
    let page = LoginPage {
        csrf: csrf.clone(),
        next,
        error,
        username,
    };
    let mut res = view::html(status, page.render());
    if let Ok(v) = set_cookie(c, LOGIN_COOKIE, &csrf, Duration::from_secs(3600)).parse() {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// The sign-in form.
pub async fn login_page(State(c): State<Arc<Console>>, Query(q): Query<LoginQuery>) -> Response {
    login_form(
        &c,
        StatusCode::OK,
        local_path(q.next.as_deref()),
        String::new(),
        String::new(),
    )
}

/// Checks a name and password; on success starts a session and goes where
/// the user was headed.
pub async fn login(
    State(c): State<Arc<Console>>,
    Extension(info): Extension<ConnInfo>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if body.len() > super::MAX_FORM_BYTES {
        return view::Failure::new(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large")
            .into_response();
    }
    let form = view::parse_form(&body);
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    // No account name is longer than 64 characters: what is tracked and
    // logged of a longer one is cut, control characters escaped.
    let (user, password, next) = (
        view::clip(field("username").trim(), 65),
        field("password"),
        local_path(Some(&field("next"))),
    );
    let sent = field(CSRF_FIELD);
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !accounts::same_secret(&sent, &expected) {
        return login_form(
            &c,
            StatusCode::FORBIDDEN,
            next,
            "The sign-in form expired or did not come from this console; please try again.".into(),
            user,
        );
    }
    let client = client_of(&info);
    let ip = info.remote.map_or_else(String::new, |a| a.ip().to_string());
    if !c.throttle_ip.attempt(&ip) || !c.throttle.attempt(&user) {
        tracing::warn!(%user, %client, "console: sign-in refused: too many attempts");
        return login_form(
            &c,
            StatusCode::TOO_MANY_REQUESTS,
            next,
            "Too many failed sign-ins for this name or from this address; wait a minute and try again.".into(),
            user,
        );
    }
    // Argon2 costs memory and CPU: a few at a time, the rest told to retry,
    // so a flood of sign-ins cannot starve the store's threads.
    let Ok(_hashing) = c.hashing.clone().try_acquire_owned() else {
        return login_form(
            &c,
            StatusCode::SERVICE_UNAVAILABLE,
            next,
            "Too many sign-ins at once; try again in a moment.".into(),
            user,
        );
    };
    let store = c.store.clone();
    let name = user.clone();
    // Argon2 is deliberately slow: off the async threads, and a wrong
    // name costs what a wrong password does.
    let checked = blocking(move || {
        let found = store.user_with_password(&name)?;
        Ok(match found {
            Some((u, hash)) if accounts::verify_password(&hash, &password) => Some(u),
            Some(_) => None,
            None => {
                accounts::verify_password(accounts::decoy_hash(), &password);
                None
            }
        })
    })
    .await;
    let account = match checked {
        Ok(Some(u)) => u,
        Ok(None) => {
            tracing::warn!(%user, %client, "console: sign-in failed");
            return login_form(
                &c,
                StatusCode::UNAUTHORIZED,
                next,
                "Wrong user name or password.".into(),
                user,
            );
        }
        Err(f) => return f.into_response(),
    };
    c.throttle.succeeded(&user);
    c.throttle_ip.succeeded(&ip);
    let (token, cred) = match new_session(CredentialKind::Session, &account.name, account.role) {
        Ok(x) => x,
        Err(f) => return f.into_response(),
    };
    let store = c.store.clone();
    let digest = accounts::token_digest(&token);
    if let Err(f) = blocking(move || store.add_credential(&digest, &cred)).await {
        return f.into_response();
    }
    tracing::info!(user = %account.name, role = account.role.name(), %client, "console: signed in");
    let mut res = Redirect::to(&next).into_response();
    for v in [
        set_cookie(&c, SESSION_COOKIE, &token, SESSION_TTL),
        set_cookie(&c, LOGIN_COOKIE, "", Duration::ZERO),
    ] {
        if let Ok(v) = v.parse() {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    res
}

/// Ends the session (its row is deleted, not only the cookie).
pub async fn logout(
    State(c): State<Arc<Console>>,
    Extension(me): Extension<Identity>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = view::parse_form(&body);
    // Anyone signed in may sign out, viewers too: check only the token.
    let viewer_ok = Identity {
        role: Role::Admin,
        ..me.clone()
    };
    if let Err(f) = viewer_ok.may_change(&form) {
        return f.into_response();
    }
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        let store = c.store.clone();
        let digest = accounts::token_digest(&token);
        if let Err(f) = blocking(move || store.remove_credential(&digest)).await {
            return f.into_response();
        }
    }
    tracing::info!(user = %me.user, client = %me.client, "console: signed out");
    let mut res = Redirect::to("/login").into_response();
    if let Ok(v) = set_cookie(&c, SESSION_COOKIE, "", Duration::ZERO).parse() {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// Who the console takes the caller for: for scripts checking a token.
pub async fn whoami(Extension(me): Extension<Identity>) -> impl IntoResponse {
    Json(serde_json::json!({
        "user": me.user,
        "role": me.role.name(),
        "via": me.kind.name(),
    }))
}
