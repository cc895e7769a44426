//! What responders do from the console: acknowledge, resolve, close,
//! assign, note and silence a group, on one group or many at once, and
//! end a silence. Each passes [`Identity::may_change`] (CSRF token and
//! role) and is recorded in the audit trail under the console user's name.
use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
    Extension,
};

use super::{
    view::{self, field, Failure},
    Console, Identity,
};
use crate::{
    groups::{Change, GroupError, Reason},
    silences,
    store::{now_ns, AlertStore},
};

/// A change's form, once its size, CSRF token and the caller's role pass.
fn checked_form(me: &Identity, body: &[u8]) -> Result<Vec<(String, String)>, Failure> {
    if body.len() > super::MAX_FORM_BYTES {
        return Err(Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the form is too large",
        ));
    }
    let form = view::parse_form(body);
    me.may_change(&form)?;
    Ok(form)
}

/// Where to go after an action: `back` when it is a path on this console.
fn back_to(form: &[(String, String)], default: String) -> String {
    view::local_path(field(form, "back")).map_or(default, str::to_string)
}

fn change_of(form: &[(String, String)]) -> Result<Option<Change>, Failure> {
    let reason =
        || Reason::parse(field(form, "reason")).map_err(|e| Failure::bad_request(e.to_string()));
    Ok(Some(match field(form, "action") {
        "ack" => Change::Acknowledge,
        "resolve" => Change::Resolve(reason()?),
        "close" => Change::Close(reason()?),
        "assign" => Change::Assign(field(form, "to").trim().to_string()),
        "note" => {
            if field(form, "note").trim().is_empty() {
                return Err(Failure::bad_request("a note needs some text"));
            }
            Change::Note
        }
        "silence" => return Ok(None),
        other => {
            return Err(Failure::bad_request(format!(
                "unknown action `{}`: ack, resolve, close, assign, note or silence",
                view::clip(other, 40)
            )))
        }
    }))
}

/// Adds the silence a group's form describes: its matchers, a duration
/// and a reason.
fn silence(
    store: &dyn AlertStore,
    form: &[(String, String)],
    me: &Identity,
) -> Result<String, Failure> {
    let texts: Vec<String> = form
        .iter()
        .filter(|(k, _)| k == "matcher")
        .map(|(_, v)| v.clone())
        .collect();
    if texts.is_empty() {
        return Err(Failure::bad_request(
            "a silence needs at least one matcher (tick rule, host or container)",
        ));
    }
    let matchers = silences::parse_matchers(&texts).map_err(Failure::bad_request)?;
    let reason = field(form, "silence_reason").trim();
    if reason.is_empty() || reason.len() > silences::MAX_REASON {
        return Err(Failure::bad_request(format!(
            "a silence needs a reason (at most {} bytes)",
            silences::MAX_REASON
        )));
    }
    let d: Duration = humantime::parse_duration(field(form, "for").trim()).map_err(|e| {
        Failure::bad_request(format!(
            "silence duration `{}`: {e} (e.g. 30m, 2h, 7d)",
            view::clip(field(form, "for"), 40)
        ))
    })?;
    if d.is_zero() || d > silences::MAX_DURATION {
        return Err(Failure::bad_request(
            "a silence lasts more than 0 and at most 365 days",
        ));
    }
    let expires = now_ns().saturating_add(d.as_nanos().min(i64::MAX as u128) as i64);
    let s = store.add_silence(&matchers, reason, expires, &me.actor())?;
    tracing::info!(silence = %s.id, matchers = ?texts, by = %s.created_by, "silence added from the console");
    Ok(s.id)
}

/// One action on one group (`/alerts/{id}/action`).
pub async fn act(
    State(c): State<Arc<Console>>,
    Extension(me): Extension<Identity>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    let form = checked_form(&me, &body)?;
    let change = change_of(&form)?;
    let store = c.store.clone();
    let back = back_to(&form, format!("/alerts/{}", view::url_encode(&id)));
    tokio::task::spawn_blocking(move || match change {
        Some(change) => {
            let g = store.update_group(&id, &change, field(&form, "note").trim(), &me.actor())?;
            tracing::info!(group = %g.id, state = g.state.name(), by = %me.actor().name, "group changed from the console");
            Ok(())
        }
        None => silence(&*store, &form, &me).map(|_| ()),
    })
    .await
    .map_err(|e| Failure::internal(e.to_string()))??;
    Ok(Redirect::to(&back).into_response())
}

/// One action on every ticked group of a list (`/alerts/bulk`): ack,
/// resolve, close or assign. Groups the change does not apply to (an
/// acknowledgement of a resolved group) are listed, the rest are changed.
pub async fn bulk(
    State(c): State<Arc<Console>>,
    Extension(me): Extension<Identity>,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    let form = checked_form(&me, &body)?;
    let ids: Vec<String> = form
        .iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| v.clone())
        .take(500)
        .collect();
    if ids.is_empty() {
        return Err(Failure::bad_request("no alert group ticked"));
    }
    let Some(change) = change_of(&form)? else {
        return Err(Failure::bad_request(
            "silence groups one at a time, from a group's page",
        ));
    };
    let store = c.store.clone();
    let back = back_to(&form, "/alerts".into());
    let refused = tokio::task::spawn_blocking(move || {
        let mut refused = Vec::new();
        for id in &ids {
            match store.update_group(id, &change, field(&form, "note").trim(), &me.actor()) {
                Ok(_) => {}
                Err(e @ (GroupError::Refused(_) | GroupError::NotFound(_))) => {
                    refused.push(format!("{}: {e}", view::clip(id, 40)))
                }
                Err(e) => return Err(Failure::from(e)),
            }
        }
        Ok(refused)
    })
    .await
    .map_err(|e| Failure::internal(e.to_string()))??;
    if !refused.is_empty() {
        return Err(Failure::new(
            StatusCode::CONFLICT,
            format!(
                "The other groups were changed; these were not: {}",
                refused.join("; ")
            ),
        ));
    }
    Ok(Redirect::to(&back).into_response())
}

/// Ends a silence now.
pub async fn expire_silence(
    State(c): State<Arc<Console>>,
    Extension(me): Extension<Identity>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Failure> {
    let form = checked_form(&me, &body)?;
    let store = c.store.clone();
    let back = back_to(&form, "/rules".into());
    tokio::task::spawn_blocking(move || store.expire_silence(&id, &me.actor()))
        .await
        .map_err(|e| Failure::internal(e.to_string()))??;
    Ok(Redirect::to(&back).into_response())
}
