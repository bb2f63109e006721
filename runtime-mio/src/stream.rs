//! Byte streams (TCP) over mio for the control plane's fallback: outgoing
//! connections only (a node listens for none), each registered for read and
//! write readiness under a token of its own, above every socket id.
//!
//! Like the UDP sockets, a stream is *ready* after a readiness event (or
//! when it has work) and is serviced by [`MioStreams::poll_event`] until a
//! read would block: connect completion, then writes of what is buffered,
//! then reads. Writes the socket does not take at once wait for the next
//! writable event; a stream closed by the machine closes once they are out.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use bytes::{Buf, Bytes};
use mio::{Interest, Registry, Token};
use transitloom_proto_core::driver::StreamEvent;
use transitloom_proto_core::machine::StreamId;

/// Tokens of streams start here: above every socket id's token.
const FIRST_STREAM_TOKEN: usize = 1 << (usize::BITS - 2);

/// Bytes read from one stream per service, so one busy stream cannot
/// starve the rest.
const READ_PER_TURN: usize = 256 * 1024;

/// Most bytes buffered for one stream; beyond it the stream is closed as
/// broken (the peer stopped reading).
const MAX_BUFFERED: usize = 32 << 20;

#[derive(Debug)]
struct MioStream {
    stream: mio::net::TcpStream,
    token: Token,
    connecting: bool,
    out: VecDeque<Bytes>,
    buffered: usize,
    closing: bool,
    ready: bool,
}

/// The streams of one [`crate::MioIo`].
#[derive(Debug)]
pub(crate) struct MioStreams {
    streams: BTreeMap<StreamId, MioStream>,
    by_token: BTreeMap<Token, StreamId>,
    next_token: usize,
    events: VecDeque<StreamEvent>,
    buf: Vec<u8>,
}

impl MioStreams {
    pub(crate) fn new() -> Self {
        Self {
            streams: BTreeMap::new(),
            by_token: BTreeMap::new(),
            next_token: FIRST_STREAM_TOKEN,
            events: VecDeque::new(),
            buf: vec![0; 64 * 1024],
        }
    }

    /// Marks the stream behind `token` ready; false when it is no stream's.
    pub(crate) fn mark_ready(&mut self, token: Token) -> bool {
        let Some(id) = self.by_token.get(&token) else {
            return false;
        };
        if let Some(s) = self.streams.get_mut(id) {
            s.ready = true;
        }
        true
    }

    /// Whether some stream has work or an event waits.
    pub(crate) fn has_work(&self) -> bool {
        !self.events.is_empty() || self.streams.values().any(|s| s.ready)
    }

    pub(crate) fn connect(
        &mut self,
        registry: &Registry,
        id: StreamId,
        remote: SocketAddr,
    ) -> io::Result<()> {
        if self.streams.contains_key(&id) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{id} is already in use"),
            ));
        }
        let mut stream = mio::net::TcpStream::from_std(crate::tcp::connect(remote)?);
        let token = Token(self.next_token);
        self.next_token += 1;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        tracing::debug!(stream = %id, %remote, "stream connecting");
        self.by_token.insert(token, id);
        self.streams.insert(
            id,
            MioStream {
                stream,
                token,
                connecting: true,
                out: VecDeque::new(),
                buffered: 0,
                closing: false,
                ready: false,
            },
        );
        Ok(())
    }

    pub(crate) fn write(&mut self, id: StreamId, bytes: Bytes) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.closing || bytes.is_empty() {
            return;
        }
        s.buffered += bytes.len();
        s.out.push_back(bytes);
        s.ready = true;
    }

    pub(crate) fn close(&mut self, registry: &Registry, id: StreamId) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.closing = true;
        s.ready = true;
        if s.out.is_empty() || s.connecting {
            self.remove(registry, id, None, false);
        }
    }

    fn remove(
        &mut self,
        registry: &Registry,
        id: StreamId,
        error: Option<io::ErrorKind>,
        report: bool,
    ) {
        let Some(mut s) = self.streams.remove(&id) else {
            return;
        };
        self.by_token.remove(&s.token);
        let _ = s.stream.shutdown(Shutdown::Both);
        if let Err(err) = registry.deregister(&mut s.stream) {
            tracing::debug!(stream = %id, error = %err, "deregister failed");
        }
        tracing::debug!(stream = %id, ?error, "stream closed");
        if report {
            self.events
                .push_back(StreamEvent::Closed { stream: id, error });
        }
    }

    /// The next event: services ready streams until one yields something.
    pub(crate) fn poll_event(&mut self, registry: &Registry) -> Option<StreamEvent> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            let id = self
                .streams
                .iter()
                .find(|(_, s)| s.ready)
                .map(|(&id, _)| id)?;
            self.service(registry, id);
        }
    }

    fn service(&mut self, registry: &Registry, id: StreamId) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.ready = false;
        if s.connecting {
            match s.stream.take_error() {
                Ok(Some(err)) | Err(err) => {
                    return self.remove(registry, id, Some(err.kind()), true);
                }
                Ok(None) => {}
            }
            match s.stream.peer_addr() {
                Ok(_) => {
                    s.connecting = false;
                    let local = s
                        .stream
                        .local_addr()
                        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                    tracing::debug!(stream = %id, %local, "stream connected");
                    self.events
                        .push_back(StreamEvent::Opened { stream: id, local });
                }
                Err(err)
                    if err.kind() == io::ErrorKind::NotConnected
                        || err.kind() == io::ErrorKind::WouldBlock =>
                {
                    return; // the next writable event tells
                }
                Err(err) => return self.remove(registry, id, Some(err.kind()), true),
            }
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.buffered > MAX_BUFFERED {
            tracing::warn!(stream = %id, buffered = s.buffered, "the peer does not read: closing");
            return self.remove(registry, id, Some(io::ErrorKind::WriteZero), true);
        }
        while let Some(front) = s.out.front_mut() {
            match s.stream.write(front) {
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
                Err(err) => return self.remove(registry, id, Some(err.kind()), true),
            }
        }
        if s.closing && s.out.is_empty() {
            return self.remove(registry, id, None, false);
        }
        let mut read = 0;
        while read < READ_PER_TURN {
            match s.stream.read(&mut self.buf) {
                Ok(0) => {
                    let report = !s.closing;
                    return self.remove(registry, id, None, report);
                }
                // A stream being closed still drains what arrives; the
                // machine wants none of it.
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
                Err(err) => return self.remove(registry, id, Some(err.kind()), true),
            }
        }
        // Budget spent with data left: come back to it.
        s.ready = true;
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use mio::{Events, Poll};
    use transitloom_proto_core::driver::UdpIo;

    use super::*;
    use crate::MioIo;

    /// Polls until some stream event comes, and returns them all.
    fn next_events(poll: &mut Poll, io: &mut MioIo) -> Vec<StreamEvent> {
        let mut events = Events::with_capacity(16);
        let mut out = Vec::new();
        for _ in 0..100 {
            while let Some(event) = io.poll_stream_event() {
                out.push(event);
            }
            if !out.is_empty() {
                return out;
            }
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            for event in events.iter() {
                io.mark_readable(event.token());
            }
        }
        panic!("no stream event within 10 s");
    }

    #[test]
    fn a_connection_opens_carries_bytes_both_ways_and_sees_the_close() {
        let mut poll = Poll::new().unwrap();
        let mut io = MioIo::new(poll.registry().try_clone().unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = StreamId(1);
        io.connect_stream(stream, listener.local_addr().unwrap())
            .unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        match next_events(&mut poll, &mut io).as_slice() {
            [StreamEvent::Opened { stream: s, local }] => {
                assert_eq!(*s, stream);
                assert_eq!(*local, peer.peer_addr().unwrap());
            }
            other => panic!("unexpected {other:?}"),
        }

        io.write_stream(stream, Bytes::from(vec![3u8; 200_000]));
        // The peer reads on this thread, so the writes go out as the pump
        // runs: service the stream between reads.
        peer.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut got = 0;
        let mut buf = vec![0; 65_536];
        while got < 200_000 {
            assert!(io.poll_stream_event().is_none());
            let mut events = Events::with_capacity(16);
            poll.poll(&mut events, Some(Duration::from_millis(10)))
                .unwrap();
            for event in events.iter() {
                io.mark_readable(event.token());
            }
            if let Ok(n) = peer.read(&mut buf) {
                assert!(buf[..n].iter().all(|&b| b == 3));
                got += n;
            }
        }

        peer.write_all(b"answer").unwrap();
        drop(peer);
        let mut answer = Vec::new();
        let mut closed = false;
        while !closed {
            for event in next_events(&mut poll, &mut io) {
                match event {
                    StreamEvent::Data { bytes, .. } => answer.extend_from_slice(&bytes),
                    StreamEvent::Closed { error, .. } => {
                        assert_eq!(error, None);
                        closed = true;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(answer, b"answer");

        // Nothing listens there any more: the connect is refused.
        let nobody = listener.local_addr().unwrap();
        drop(listener);
        io.connect_stream(StreamId(2), nobody).unwrap();
        assert_eq!(
            next_events(&mut poll, &mut io),
            vec![StreamEvent::Closed {
                stream: StreamId(2),
                error: Some(io::ErrorKind::ConnectionRefused)
            }]
        );
    }
}
