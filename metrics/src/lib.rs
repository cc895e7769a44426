//! Metrics and health over HTTP for operators: Prometheus text format on
//! `/metrics`, liveness on `/healthz`, readiness on `/readyz`. The agent
//! and the collector each render their own metrics into a [`Text`]; this
//! crate only writes the format and serves it.
use std::{convert::Infallible, fmt::Write as _, future::Future, sync::Arc};

use http_body_util::Full;
use hyper::{body::Bytes, service::service_fn, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Prometheus text exposition (format 0.0.4), written metric by metric.
#[derive(Default)]
pub struct Text {
    out: String,
}

impl Text {
    /// Starts a metric: its help line and type (`counter` or `gauge`).
    pub fn metric(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the metric, with labels.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// A metric with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) -> &mut Self {
        self.metric(name, kind, help).sample(name, &[], value)
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A label value as the format wants it: `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What the endpoints answer with.
pub trait Source: Send + Sync + 'static {
    /// The `/metrics` body.
    fn render(&self) -> String;
    /// `/readyz`: Ok when ready, Err(why) when not.
    fn ready(&self) -> Result<(), String>;
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until
/// `shutdown` resolves. Anything else is 404; a method other than GET or
/// HEAD is 405. Each connection is served on its own task.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn Source>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (sock, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let source = source.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let source = source.clone();
                async move { Ok::<_, Infallible>(answer(&req, source.as_ref())) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(TokioIo::new(sock), svc);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
        });
    }
}

fn answer(req: &Request<hyper::body::Incoming>, source: &dyn Source) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &'static str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", ctype)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            source.render(),
        ),
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match source.ready() {
            Ok(()) => reply(StatusCode::OK, "text/plain", "ready\n".into()),
            Err(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: /metrics, /healthz, /readyz\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_escapes_labels() {
        let mut t = Text::default();
        t.metric("vigil_x_total", "counter", "Things.").sample(
            "vigil_x_total",
            &[("rule", "a \"b\"\\c\nd")],
            3.0,
        );
        t.single("vigil_y", "gauge", "Y.", 1.5);
        assert_eq!(
            t.finish(),
            "# HELP vigil_x_total Things.\n# TYPE vigil_x_total counter\nvigil_x_total{rule=\"a \\\"b\\\"\\\\c\\nd\"} 3\n# HELP vigil_y Y.\n# TYPE vigil_y gauge\nvigil_y 1.5\n"
        );
    }
}
