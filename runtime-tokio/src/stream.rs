//! Byte streams (TCP) over tokio for the control plane's fallback: the
//! coordinator's listener on its UDP port number, and outgoing connections
//! (`tlctl`).
//!
//! Reads and writes go through `try_read`/`try_write`, which answer
//! `WouldBlock` without a system call while tokio holds no readiness, so
//! servicing every stream on each pump is cheap; [`TokioStreams::poll_ready`]
//! registers the waker with every listener and stream, so the driver's wait
//! ends when one has something.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use transitloom_proto_core::driver::StreamEvent;
use transitloom_proto_core::{SocketId, StreamId};
use transitloom_runtime_mio::tcp;

/// Bytes read from one stream per pump, so one busy stream cannot starve
/// the rest.
const READ_PER_TURN: usize = 256 * 1024;

/// Most bytes buffered for one stream; beyond it the stream is closed as
/// broken (the peer stopped reading).
const MAX_BUFFERED: usize = 32 << 20;

#[derive(Debug)]
struct TokioStream {
    stream: TcpStream,
    connecting: bool,
    out: VecDeque<Bytes>,
    buffered: usize,
    closing: bool,
}

/// The listeners and streams of one [`crate::TokioIo`].
#[derive(Debug, Default)]
pub(crate) struct TokioStreams {
    listeners: BTreeMap<SocketId, TcpListener>,
    streams: BTreeMap<StreamId, TokioStream>,
    next_accepted: u64,
    events: VecDeque<StreamEvent>,
    buf: Vec<u8>,
}

impl TokioStreams {
    pub(crate) fn listen(&mut self, id: SocketId, local: SocketAddr) -> io::Result<SocketAddr> {
        if self.listeners.contains_key(&id) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{id} is already in use"),
            ));
        }
        let listener = TcpListener::from_std(tcp::listen(local)?)?;
        let bound = listener.local_addr()?;
        tracing::debug!(listener = %id, local = %bound, "listening for streams");
        self.listeners.insert(id, listener);
        Ok(bound)
    }

    pub(crate) fn connect(&mut self, id: StreamId, remote: SocketAddr) -> io::Result<()> {
        if self.streams.contains_key(&id) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{id} is already in use"),
            ));
        }
        let stream = TcpStream::from_std(tcp::connect(remote)?)?;
        tracing::debug!(stream = %id, %remote, "stream connecting");
        self.streams.insert(
            id,
            TokioStream {
                stream,
                connecting: true,
                out: VecDeque::new(),
                buffered: 0,
                closing: false,
            },
        );
        Ok(())
    }

    pub(crate) fn write(&mut self, id: StreamId, bytes: Bytes) {
        if let Some(s) = self.streams.get_mut(&id) {
            if !s.closing && !bytes.is_empty() {
                s.buffered += bytes.len();
                s.out.push_back(bytes);
            }
        }
    }

    pub(crate) fn close(&mut self, id: StreamId) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.closing = true;
        if s.out.is_empty() || s.connecting {
            self.remove(id, None, false);
        }
    }

    fn remove(&mut self, id: StreamId, error: Option<io::ErrorKind>, report: bool) {
        if self.streams.remove(&id).is_some() {
            tracing::debug!(stream = %id, ?error, "stream closed");
            if report {
                self.events
                    .push_back(StreamEvent::Closed { stream: id, error });
            }
        }
    }

    /// Ready when some listener or stream has something; otherwise `cx` is
    /// registered with all of them.
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.events.is_empty() {
            return Poll::Ready(());
        }
        let mut ready = false;
        for (&id, listener) in &self.listeners {
            match listener.poll_accept(cx) {
                Poll::Ready(Ok((stream, remote))) => {
                    let _ = stream.set_nodelay(true);
                    self.next_accepted += 1;
                    let stream_id = StreamId(StreamId::ACCEPTED | self.next_accepted);
                    tracing::debug!(listener = %id, stream = %stream_id, %remote, "stream accepted");
                    self.streams.insert(
                        stream_id,
                        TokioStream {
                            stream,
                            connecting: false,
                            out: VecDeque::new(),
                            buffered: 0,
                            closing: false,
                        },
                    );
                    self.events.push_back(StreamEvent::Accepted {
                        listener: id,
                        stream: stream_id,
                        remote,
                    });
                    ready = true;
                }
                // Out of descriptors and the like: logged, tried again on
                // the next wait.
                Poll::Ready(Err(err)) => {
                    tracing::warn!(listener = %id, error = %err, "accept failed")
                }
                Poll::Pending => {}
            }
        }
        for s in self.streams.values() {
            if s.stream.poll_read_ready(cx).is_ready() {
                ready = true;
            }
            if (s.connecting || !s.out.is_empty()) && s.stream.poll_write_ready(cx).is_ready() {
                ready = true;
            }
        }
        if ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Whether events wait to be taken.
    pub(crate) fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next event, servicing every stream once when none waits.
    pub(crate) fn poll_event(&mut self) -> Option<StreamEvent> {
        if self.events.is_empty() {
            let ids: Vec<StreamId> = self.streams.keys().copied().collect();
            for id in ids {
                self.service(id);
            }
        }
        self.events.pop_front()
    }

    fn service(&mut self, id: StreamId) {
        if self.buf.is_empty() {
            self.buf = vec![0; 64 * 1024];
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.connecting {
            let stream = &s.stream;
            let state = stream.try_io(Interest::WRITABLE, || {
                if let Some(err) = stream.take_error()? {
                    return Err(err);
                }
                match stream.peer_addr() {
                    Ok(_) => Ok(()),
                    Err(err) if err.kind() == io::ErrorKind::NotConnected => {
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                    Err(err) => Err(err),
                }
            });
            match state {
                Ok(()) => {
                    s.connecting = false;
                    let local = s
                        .stream
                        .local_addr()
                        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                    tracing::debug!(stream = %id, %local, "stream connected");
                    self.events
                        .push_back(StreamEvent::Opened { stream: id, local });
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => return self.remove(id, Some(err.kind()), true),
            }
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.buffered > MAX_BUFFERED {
            tracing::warn!(stream = %id, buffered = s.buffered, "the peer does not read: closing");
            return self.remove(id, Some(io::ErrorKind::WriteZero), true);
        }
        while let Some(front) = s.out.front_mut() {
            match s.stream.try_write(front) {
                Ok(0) => break,
                Ok(n) => {
                    s.buffered -= n;
                    front.advance(n);
                    if front.is_empty() {
                        s.out.pop_front();
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return self.remove(id, Some(err.kind()), true),
            }
        }
        if s.closing && s.out.is_empty() {
            return self.remove(id, None, false);
        }
        let mut read = 0;
        while read < READ_PER_TURN {
            match s.stream.try_read(&mut self.buf) {
                Ok(0) => {
                    let report = !s.closing;
                    return self.remove(id, None, report);
                }
                // A stream being closed still drains what arrives, so its
                // readiness clears; the machine wants none of it.
                Ok(_) if s.closing => {}
                Ok(n) => {
                    read += n;
                    self.events.push_back(StreamEvent::Data {
                        stream: id,
                        bytes: self.buf[..n].to_vec(),
                    });
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return self.remove(id, Some(err.kind()), true),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use transitloom_proto_core::driver::UdpIo;

    use super::*;
    use crate::TokioIo;

    /// Waits for readiness, then takes every event the pump would see.
    async fn next_events(io: &mut TokioIo) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        while events.is_empty() {
            tokio::time::timeout(
                Duration::from_secs(5),
                poll_fn(|cx| io.poll_any_readable(cx)),
            )
            .await
            .expect("ready in time");
            while let Some(event) = io.poll_stream_event() {
                events.push(event);
            }
        }
        events
    }

    #[test]
    fn a_listener_and_a_connection_carry_bytes_both_ways_and_closes() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut io = TokioIo::new();
            let listener = SocketId(1);
            let local = io
                .listen_stream(listener, "127.0.0.1:0".parse().unwrap())
                .unwrap();
            let client = StreamId(1);
            io.connect_stream(client, local).unwrap();
            let mut accepted = None;
            let mut opened = false;
            while accepted.is_none() || !opened {
                for event in next_events(&mut io).await {
                    match event {
                        StreamEvent::Accepted {
                            listener: l,
                            stream,
                            ..
                        } => {
                            assert_eq!(l, listener);
                            assert!(stream.is_accepted());
                            accepted = Some(stream);
                        }
                        StreamEvent::Opened { stream, .. } => {
                            assert_eq!(stream, client);
                            opened = true;
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            let server = accepted.unwrap();
            io.write_stream(client, Bytes::from_static(b"hello "));
            io.write_stream(client, Bytes::from(vec![7u8; 300_000]));
            let mut got = Vec::new();
            while got.len() < 300_006 {
                for event in next_events(&mut io).await {
                    match event {
                        StreamEvent::Data { stream, bytes } if stream == server => {
                            got.extend_from_slice(&bytes)
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            assert_eq!(&got[..6], b"hello ");
            assert!(got[6..].iter().all(|&b| b == 7));

            // The server answers and closes: the client gets the answer,
            // then an orderly close.
            io.write_stream(server, Bytes::from_static(b"bye"));
            io.close_stream(server);
            let mut answer = Vec::new();
            loop {
                let events = next_events(&mut io).await;
                let mut closed = false;
                for event in events {
                    match event {
                        StreamEvent::Data { stream, bytes } if stream == client => {
                            answer.extend_from_slice(&bytes)
                        }
                        StreamEvent::Closed { stream, error } if stream == client => {
                            assert_eq!(error, None);
                            closed = true;
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
                if closed {
                    break;
                }
            }
            assert_eq!(answer, b"bye");

            // Connecting where nothing listens reports the refusal.
            io.close_stream(client);
            let refused = StreamId(2);
            let nobody = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap()
            };
            io.connect_stream(refused, nobody).unwrap();
            let events = next_events(&mut io).await;
            assert_eq!(
                events,
                vec![StreamEvent::Closed {
                    stream: refused,
                    error: Some(io::ErrorKind::ConnectionRefused)
                }]
            );
        });
    }
}
