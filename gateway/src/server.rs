//! The HTTP server loop: HTTP/1.1 and HTTP/2 (prior knowledge) on one
//! port, with the connection bounds a public port needs. A client that
//! sends half a header, or opens connections and sends nothing, loses its
//! connection after a timeout instead of holding it forever; the number of
//! connections is capped. With TLS on, every connection is TLS (the
//! handshake bounded by `--tls-handshake-timeout`, holding its connection
//! slot), with the certificate current when it was accepted.

use std::{
    future::Future,
    io,
    pin::{Pin, pin},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::{Semaphore, watch},
    time::Instant,
};
use tower::ServiceExt;
use vesper::tls::{Port, ServerTls};

use crate::ServerLimits;

/// How often an HTTP/2 connection is pinged, so a peer that vanished is
/// noticed.
const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` within `limits` until `shutdown`
/// completes, then lets in-flight requests finish and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &ServerLimits,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let max_connections = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let connections = Arc::new(Semaphore::new(max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL);
    let builder = Arc::new(builder);
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit,
            () = &mut shutdown => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, or a connection reset before it
                // was accepted: neither ends the server.
                tracing::warn!("cannot accept a connection: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            builder: builder.clone(),
            router: router.clone(),
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            stopping: stopping.clone(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(tls) => {
                    let acceptor = tls.acceptor(Port::Http);
                    let timeout = tls.handshake_timeout();
                    if let Some(stream) =
                        vesper::tls::handshake(acceptor, stream, timeout, peer).await
                    {
                        connection.run(stream).await;
                    }
                }
                None => connection.run(stream).await,
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a permit until it is closed.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _drained = connections.acquire_many(all).await;
    Ok(())
}

/// One accepted connection and what it needs to be served.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    stopping: watch::Receiver<bool>,
}

impl Connection {
    async fn run<S>(mut self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: activity.clone(),
        });
        let router = self.router.clone();
        let counted = activity.clone();
        let service = hyper::service::service_fn(move |request| {
            let router = router.clone();
            let in_flight = InFlightGuard::new(counted.clone());
            async move {
                let response = router.oneshot(request.map(axum::body::Body::new)).await;
                drop(in_flight);
                response
            }
        });
        let mut served = pin!(
            self.builder
                .serve_connection_with_upgrades(io, service)
                .into_owned()
        );
        let (header_read_timeout, idle_timeout) = (self.header_read_timeout, self.idle_timeout);
        let mut draining = false;
        loop {
            let deadline = activity.deadline(header_read_timeout, idle_timeout);
            tokio::select! {
                result = served.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!("HTTP connection closed: {err}");
                    }
                    return;
                }
                _ = self.stopping.wait_for(|stop| *stop), if !draining => {
                    draining = true;
                    served.as_mut().graceful_shutdown();
                }
                () = tokio::time::sleep_until(deadline), if !draining => {
                    if activity.is_idle(header_read_timeout, idle_timeout) {
                        tracing::debug!("closing an idle HTTP connection");
                        draining = true;
                        served.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// What a connection has been doing: when bytes last moved, how many
/// requests are in flight, and whether any request ever started.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    /// Milliseconds since `opened` of the last read or write.
    last_traffic_ms: AtomicU64,
    in_flight: AtomicUsize,
    any_request: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_traffic_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            any_request: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let elapsed = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_traffic_ms.fetch_max(elapsed, Ordering::Relaxed);
    }

    fn last_traffic(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_traffic_ms.load(Ordering::Relaxed))
    }

    /// When the connection would become closable if nothing happened. Until
    /// a first request starts, a connection gets the header read timeout
    /// from its opening, however it trickles bytes (this also covers the
    /// bytes read to tell HTTP/1 from HTTP/2, before hyper's own header
    /// timer runs).
    fn deadline(&self, header_read_timeout: Duration, idle_timeout: Duration) -> Instant {
        let idle = self.last_traffic() + idle_timeout;
        if self.any_request.load(Ordering::Relaxed) {
            idle
        } else {
            idle.min(self.opened + header_read_timeout)
        }
    }

    fn is_idle(&self, header_read_timeout: Duration, idle_timeout: Duration) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && Instant::now() >= self.deadline(header_read_timeout, idle_timeout)
    }
}

/// Counts a request as in flight for as long as it lives (dropped when
/// the answer is ready or the request is abandoned).
struct InFlightGuard(Arc<Activity>);

impl InFlightGuard {
    fn new(activity: Arc<Activity>) -> Self {
        activity.any_request.store(true, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A stream that notes when bytes move.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
