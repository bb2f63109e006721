//! The coordinator's UDP edge besides QUIC: the reflector on the control
//! socket and on extra addresses (DESIGN §5). The relay it may host is in
//! [`relaying`](super::relaying).

use std::net::SocketAddr;
use std::time::Instant;

use super::super::reflector;
use super::{msg, Coordinator, ExtraReflector, REFLECTOR_SOCKETS};
use crate::id::SocketId;
use crate::machine::{Output, Transmit};

impl Coordinator {
    /// Opens extra reflector addresses (DESIGN §5), at most
    /// [`msg::MAX_REFLECTORS`]: each is bound as its own UDP socket and
    /// pushed to every node after `Welcome`. A node that asks the
    /// reflector at two addresses from one mesh socket learns whether its
    /// NAT maps per destination, and how it allocates ports. Call before
    /// the first [`poll_output`]; the addresses must be reachable by nodes
    /// as they are (no wildcard).
    ///
    /// [`poll_output`]: crate::machine::StateMachine::poll_output
    pub fn set_reflectors(&mut self, extra: &[SocketAddr]) {
        for (i, &local) in extra.iter().take(msg::MAX_REFLECTORS).enumerate() {
            let socket = SocketId(REFLECTOR_SOCKETS.0 + i as u32);
            self.outputs.push_back(Output::BindSocket { socket, local });
            self.reflectors.push(ExtraReflector {
                socket,
                advertised: local,
            });
        }
    }

    /// The extra reflector addresses.
    pub fn reflectors(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.reflectors.iter().map(|r| r.advertised)
    }

    pub(super) fn reflect(
        &mut self,
        now: Instant,
        socket: SocketId,
        src: SocketAddr,
        payload: &[u8],
    ) {
        let assocs = &self.assocs;
        let key_of = |id| assocs.key(id).copied();
        match reflector::answer(key_of, &self.config.wall_clock, now, src, payload) {
            Ok(payload) => {
                self.counters.reflected += 1;
                self.outputs.push_back(Output::Transmit(Transmit {
                    socket,
                    dst: src,
                    payload,
                }));
            }
            Err(refusal) => {
                *self
                    .counters
                    .reflect_refused
                    .entry(refusal.as_str())
                    .or_default() += 1;
                tracing::trace!(%src, reason = refusal.as_str(), "reflect request refused");
            }
        }
    }
}
