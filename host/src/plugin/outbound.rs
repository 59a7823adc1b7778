//! Outbound HTTP (`wasi:http/outgoing-handler`, served by
//! `wasmtime-wasi-http`): denied unless the operator allows the scheme,
//! host and port in `plugins.NAME.allowed_outbound_hosts`, bounded in
//! requests in flight per plugin, in time and in response bytes, counted
//! in the metrics and shown in the console.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::wait::WaitMark;
use crate::config::Grants;
use crate::console::{Console, Kind};
use crate::metrics::{OutboundMetrics, OutboundOutcome};

/// What every request of one plugin version is checked and counted against.
pub struct HttpPolicy {
    pub plugin: Arc<str>,
    pub grants: Arc<Grants>,
    /// Requests in flight, shared by the plugin's versions.
    pub in_flight: Arc<Semaphore>,
    pub max_response: u64,
    /// Bounds connecting, the response's head and each gap in its body
    /// (the call that waits is bounded by `wait_timeout` as a whole).
    pub timeout: Duration,
    pub metrics: OutboundMetrics,
    pub console: Arc<Console>,
}

/// The hooks of one instance's store.
pub struct OutboundHooks {
    policy: Arc<HttpPolicy>,
    waited: WaitMark,
    conn: Arc<str>,
}

impl OutboundHooks {
    pub fn new(policy: Arc<HttpPolicy>, waited: WaitMark, conn: Arc<str>) -> Self {
        Self { policy, waited, conn }
    }
}

type Sent = Box<
    dyn Future<Output = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), Error>>
        + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        let policy = self.policy.clone();
        let conn = self.conn.clone();
        let uri = request.uri().clone();
        let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
        let host = uri.host().unwrap_or("").to_string();
        let port = uri.port_u16().unwrap_or(if scheme == "http" { 80 } else { 443 });
        let shown = format!("{} {uri}", request.method());
        if !policy.grants.allows(&scheme, &host, port) {
            policy.metrics.count(OutboundOutcome::Denied);
            let why = format!(
                "{shown} denied: {scheme}://{host}:{port} is not in plugins.{}.allowed_outbound_hosts",
                policy.plugin
            );
            tracing::info!(plugin = &*policy.plugin, conn = &*conn, "{why}");
            policy.console.publish(Kind::Outbound, Some(&conn), Some("denied"), || why);
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let Ok(permit) = policy.in_flight.clone().try_acquire_owned() else {
            policy.metrics.count(OutboundOutcome::Busy);
            policy.console.publish(Kind::Outbound, Some(&conn), Some("busy"), || {
                format!("{shown} refused: limits.http_in_flight requests of this plugin are in flight")
            });
            return Box::new(async { Err(Error::ConnectionLimitReached) });
        };
        // Waiting for the answer is not computing: the call is bounded by
        // wait_timeout from now on.
        self.waited.mark();
        let timeout = policy.timeout;
        let within = |asked: Option<Duration>| Some(asked.map_or(timeout, |d| d.min(timeout)));
        let options = options.unwrap_or_default();
        let options = RequestOptions {
            connect_timeout: within(options.connect_timeout),
            first_byte_timeout: within(options.first_byte_timeout),
            between_bytes_timeout: within(options.between_bytes_timeout),
        };
        Box::new(async move {
            let started = Instant::now();
            let sent = tokio::time::timeout(timeout, wasmtime_wasi_http::default_send_request(request, Some(options)));
            let outcome = match sent.await {
                Ok(result) => result,
                Err(_) => Err(Error::HttpResponseTimeout),
            };
            let took = started.elapsed();
            policy.metrics.seconds.observe(took.as_secs_f64());
            match outcome {
                Ok((response, io)) => {
                    policy.metrics.count(OutboundOutcome::Response);
                    let status = response.status().as_u16();
                    policy.console.publish(Kind::Outbound, Some(&conn), Some("response"), || {
                        format!("{shown} answered {status} in {took:.1?}")
                    });
                    let max = policy.max_response;
                    let response = response.map(|body| {
                        Capped { body: body.boxed_unsync(), left: max, max, _permit: permit }.boxed_unsync()
                    });
                    Ok((response, Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>))
                }
                Err(e) => {
                    policy.metrics.count(OutboundOutcome::Failed);
                    policy.console.publish(Kind::Outbound, Some(&conn), Some("failed"), || {
                        format!("{shown} failed after {took:.1?}: {e}")
                    });
                    Err(e)
                }
            }
        })
    }
}

/// A response body cut off past `limits.http_response_size`; it holds the
/// request's place in flight until it is read or dropped.
struct Capped {
    body: WasiBody,
    left: u64,
    max: u64,
    _permit: OwnedSemaphorePermit,
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            let len = data.len() as u64;
            if len > self.left {
                self.left = 0;
                return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(self.max)))));
            }
            self.left -= len;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}
