//! One client connection: what it is doing, the deadline that follows from it, and the hyper
//! service that hands its requests to the router.
//!
//! A connection is *waiting* (for the first byte of a request), reading a request's *head*, or
//! *busy* with a request. Waiting ends after `idle_timeout` on a kept-alive connection and after
//! `header_read_timeout` on a new one; a head must be complete `header_read_timeout` after its
//! first byte (a new connection's, after it was accepted); a busy connection has no deadline of
//! its own (the request's body has `body_read_timeout` from when its head was in, and the edge's
//! `request_timeout` bounds the handler). hyper's own header timeout is not used: in hyper 1.12
//! its timer starts when the connection begins waiting for the next request, so it would also
//! close idle keep-alive connections, at the header timeout.
//!
//! The phase lives in one atomic per connection, written by the connection's own task (reads,
//! requests, finished responses) and read by the cap's eviction (`serve.rs`); the deadline is one
//! timer per connection, re-armed when it fires (at most once per header timeout while requests
//! flow), not per request. The connection's task also holds its caller slot (`caller.rs`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use axum::Router;
use hyper::body::{Body as HttpBody, Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tower::Service;

use super::caller;

/// How long each phase of a connection may last.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// A request's head, from its first byte (a new connection's first, from the accept).
    pub header_read: Duration,
    /// A request's body, from when its head was in.
    pub body_read: Duration,
    /// A kept-alive connection between requests.
    pub idle: Duration,
}

/// What a connection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, no byte of its first request yet.
    New,
    /// Between requests, no byte of the next one yet.
    Idle,
    /// Reading a request's head.
    Head,
    /// A request is being handled or its response written.
    Busy,
}

impl Phase {
    const ALL: [Phase; 4] = [Phase::New, Phase::Idle, Phase::Head, Phase::Busy];

    /// Waiting for a request: nothing of one received, so closing loses nobody's request.
    pub fn is_waiting(self) -> bool {
        matches!(self, Phase::New | Phase::Idle)
    }
}

/// Phase and the millisecond (since the server's epoch) it began, in one word: the phase in
/// the top byte.
const PHASE_SHIFT: u32 = 56;
const SINCE_MASK: u64 = (1 << PHASE_SHIFT) - 1;

/// One connection as the server tracks it.
pub struct Tracked {
    pub id: u64,
    state: AtomicU64,
    epoch: Instant,
    /// Set (under the registry's lock) when the connection is told to close: evicted by the cap
    /// or drained at shutdown.
    asked_to_close: AtomicBool,
    closing: Notify,
}

impl Tracked {
    pub fn new(id: u64, epoch: Instant) -> Self {
        let tracked = Self {
            id,
            state: AtomicU64::new(0),
            epoch,
            asked_to_close: AtomicBool::new(false),
            closing: Notify::new(),
        };
        tracked.enter(Phase::New);
        tracked
    }

    fn enter(&self, phase: Phase) {
        if phase == Phase::Busy {
            // No deadline and never evicted: when it began does not matter (no clock read).
            self.state
                .store((Phase::Busy as u64) << PHASE_SHIFT, Relaxed);
            return;
        }
        let since = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(SINCE_MASK);
        self.state.store(
            ((phase as u64) << PHASE_SHIFT) | (since & SINCE_MASK),
            Relaxed,
        );
    }

    /// The phase and when it began.
    pub fn phase(&self) -> (Phase, Instant) {
        let state = self.state.load(Relaxed);
        let phase = Phase::ALL[((state >> PHASE_SHIFT) as usize).min(Phase::ALL.len() - 1)];
        (
            phase,
            self.epoch + Duration::from_millis(state & SINCE_MASK),
        )
    }

    /// Bytes arrived: a waiting connection is now reading a head. A new connection's head
    /// deadline keeps counting from the accept.
    fn received(&self) {
        match self.phase().0 {
            Phase::Idle => self.enter(Phase::Head),
            Phase::New => {
                let state = self.state.load(Relaxed);
                self.state.store(
                    ((Phase::Head as u64) << PHASE_SHIFT) | (state & SINCE_MASK),
                    Relaxed,
                );
            }
            Phase::Head | Phase::Busy => {}
        }
    }

    fn deadline(&self, timeouts: &Timeouts) -> Option<Instant> {
        let (phase, since) = self.phase();
        match phase {
            Phase::New | Phase::Head => Some(since + timeouts.header_read),
            Phase::Idle => Some(since + timeouts.idle),
            Phase::Busy => None,
        }
    }

    /// Tells the connection to finish what it received and close. Returns false if it was
    /// told already.
    pub fn ask_to_close(&self) -> bool {
        if self.asked_to_close.swap(true, Relaxed) {
            return false;
        }
        self.closing.notify_one();
        true
    }

    pub fn was_asked_to_close(&self) -> bool {
        self.asked_to_close.load(Relaxed)
    }
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The client or hyper closed it (or it finished after being asked to close).
    Closed,
    /// Its phase's deadline passed.
    TimedOut(Phase),
}

/// What every connection of one server shares.
pub struct ConnectionConfig {
    pub http: hyper::server::conn::http1::Builder,
    pub router: Router,
    pub timeouts: Timeouts,
}

/// Serves one accepted connection until it closes, times out, or is told to close (then it
/// answers what it received, still under its deadlines).
pub async fn run(
    stream: TcpStream,
    client: SocketAddr,
    tracked: Arc<Tracked>,
    config: Arc<ConnectionConfig>,
) -> Ended {
    caller::serve_for(client.ip(), serve(stream, tracked, config)).await
}

async fn serve(stream: TcpStream, tracked: Arc<Tracked>, config: Arc<ConnectionConfig>) -> Ended {
    let service = ConnectionService {
        router: config.router.clone(),
        tracked: Arc::clone(&tracked),
        body_read: config.timeouts.body_read,
    };
    let io = TokioIo::new(Watched {
        stream,
        tracked: Arc::clone(&tracked),
    });
    let connection = config.http.serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let closing = tracked.closing.notified();
    let mut closing = std::pin::pin!(closing);
    let first_deadline = tracked
        .deadline(&config.timeouts)
        .unwrap_or_else(Instant::now);
    let sleep = tokio::time::sleep_until(first_deadline);
    let mut sleep = std::pin::pin!(sleep);
    let mut armed = first_deadline;
    let timed = Timed {
        connection: connection.as_mut(),
        sleep: sleep.as_mut(),
        armed: &mut armed,
        tracked: &tracked,
        timeouts: &config.timeouts,
    };
    tokio::select! {
        ended = timed => return ended,
        () = &mut closing => {}
    }
    connection.as_mut().graceful_shutdown();
    Timed {
        connection: connection.as_mut(),
        sleep: sleep.as_mut(),
        armed: &mut armed,
        tracked: &tracked,
        timeouts: &config.timeouts,
    }
    .await
}

/// The connection, raced against its phase's deadline.
struct Timed<'a, C> {
    connection: Pin<&'a mut C>,
    sleep: Pin<&'a mut Sleep>,
    /// When `sleep` fires: never later than the deadline it was last armed for.
    armed: &'a mut Instant,
    tracked: &'a Tracked,
    timeouts: &'a Timeouts,
}

impl<C, E> Future for Timed<'_, C>
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    type Output = Ended;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Ended> {
        let this = &mut *self;
        if let Poll::Ready(served) = this.connection.as_mut().poll(context) {
            if let Err(error) = served {
                tracing::debug!(%error, "connection ended with an error");
            }
            return Poll::Ready(Ended::Closed);
        }
        loop {
            // Busy: the request's own limits apply; a timer armed earlier may still fire, and is
            // then re-armed below once the connection waits again.
            let Some(deadline) = this.tracked.deadline(this.timeouts) else {
                return Poll::Pending;
            };
            if deadline < *this.armed {
                // Not reached in practice (see below); kept so no deadline is ever missed.
                this.sleep.as_mut().reset(deadline);
                *this.armed = deadline;
            }
            if this.sleep.as_mut().poll(context).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if deadline <= now {
                return Poll::Ready(Ended::TimedOut(this.tracked.phase().0));
            }
            // Fired early (for an earlier phase, or as the alarm below): arm again, never later
            // than a head starting now could end. A request's head then never needs the timer
            // moved earlier, so requests on a busy connection do not touch the timer at all: it
            // is re-armed once per header timeout at most.
            let alarm = deadline.min(now + this.timeouts.header_read);
            this.sleep.as_mut().reset(alarm);
            *this.armed = alarm;
        }
    }
}

/// The socket, noting when bytes arrive (the start of a request's head).
struct Watched {
    stream: TcpStream,
    tracked: Arc<Tracked>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buffer.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(context, buffer);
        if buffer.filled().len() > before {
            this.tracked.received();
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(context, bytes)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(context)
    }
}

/// When a request began to reach the server: its first bytes on a kept-alive connection, the
/// accept on a new one (to the millisecond, from the phase already tracked: no clock read). The
/// `Arrived` extractor turns it into the request's arrival for the routes that need one, so the
/// time a request waited for the server's tasks to get to it (under a crowd, tens of
/// milliseconds) counts as before it reached them.
#[derive(Clone, Copy, Debug)]
pub struct HeadBegan(pub Option<Instant>);

/// Hands a connection's requests to the router: marks the connection busy, gives the body its
/// deadline, and marks the connection idle again once the response is written.
struct ConnectionService {
    router: Router,
    tracked: Arc<Tracked>,
    body_read: Duration,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnectionService {
    type Response = hyper::Response<Sending>;
    type Error = Infallible;
    type Future = Answering;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Answering {
        let (phase, since) = self.tracked.phase();
        request.extensions_mut().insert(HeadBegan(
            matches!(phase, Phase::New | Phase::Head).then_some(since),
        ));
        self.tracked.enter(Phase::Busy);
        // A request without a body (most purchases) has nothing to time: its body stays as
        // hyper made it, as boxed as it would be anyway.
        let request: Request = request.map(|body| {
            if body.is_end_stream() {
                Body::new(body)
            } else {
                Body::new(TimedBody::new(body, self.body_read))
            }
        });
        // `Router` is always ready (its `poll_ready` returns `Ready` at once).
        let routed = self.router.clone().call(request);
        Answering {
            routed,
            tracked: Some(Arc::clone(&self.tracked)),
        }
    }
}

struct Answering {
    routed: RouteFuture<Infallible>,
    tracked: Option<Arc<Tracked>>,
}

impl Future for Answering {
    type Output = Result<hyper::Response<Sending>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Poll::Ready(routed) = Pin::new(&mut this.routed).poll(context) else {
            return Poll::Pending;
        };
        let response: Response = match routed {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let tracked = this.tracked.take();
        Poll::Ready(Ok(response.map(|body| Sending { body, tracked })))
    }
}

/// A response body that marks its connection idle once hyper is done with it (written, or
/// given up with the connection).
struct Sending {
    body: Body,
    tracked: Option<Arc<Tracked>>,
}

impl Drop for Sending {
    fn drop(&mut self) {
        if let Some(tracked) = &self.tracked {
            tracked.enter(Phase::Idle);
        }
    }
}

impl HttpBody for Sending {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that must arrive within its deadline (set when the head was in). Its timer
/// is made only if the body is not there when first asked for: most bodies come with their
/// head.
pub struct TimedBody {
    body: Incoming,
    deadline: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl TimedBody {
    fn new(body: Incoming, limit: Duration) -> Self {
        Self {
            body,
            deadline: Some(Instant::now() + limit),
            timer: None,
        }
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reading the request body: {0}")]
    Read(#[from] hyper::Error),
    #[error("the request body did not arrive within the body read timeout")]
    TimedOut,
}

/// Whether `error`, or an error it wraps, is a body that did not arrive in time.
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if matches!(error.downcast_ref::<BodyError>(), Some(BodyError::TimedOut)) {
            return true;
        }
        cause = error.source();
    }
    false
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(context) {
            return Poll::Ready(frame.map(|frame| frame.map_err(BodyError::Read)));
        }
        let Some(deadline) = this.deadline else {
            return Poll::Pending;
        };
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(context) {
            Poll::Ready(()) => {
                this.deadline = None;
                Poll::Ready(Some(Err(BodyError::TimedOut)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
