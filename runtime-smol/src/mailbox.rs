//! A ready-made [`Sink`] for embedders: keeps what the machine hands out
//! until the program takes it after a pump.

use bytes::Bytes;
use transitloom_proto_core::driver::Sink;
use transitloom_proto_core::ServiceId;

/// Events and delivered payloads, in the order the machine produced them
/// (each list on its own).
#[derive(Debug)]
pub struct Mailbox<E> {
    /// Events for status, metrics or the program.
    pub events: Vec<E>,
    /// Payloads for in-process local services.
    pub delivered: Vec<(ServiceId, Bytes)>,
}

impl<E> Default for Mailbox<E> {
    fn default() -> Self {
        Self {
            events: Vec::new(),
            delivered: Vec::new(),
        }
    }
}

impl<E> Mailbox<E> {
    /// An empty mailbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when nothing waits to be taken.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.delivered.is_empty()
    }
}

impl<E> Sink<E> for Mailbox<E> {
    fn event(&mut self, event: E) {
        self.events.push(event);
    }

    fn deliver(&mut self, service: ServiceId, payload: Bytes) {
        self.delivered.push((service, payload));
    }
}
