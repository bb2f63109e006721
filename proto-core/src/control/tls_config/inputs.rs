//! The randomness and wall-clock time rustls needs, lent by the machine that
//! owns a TLS session for the duration of one call (see the parent module).

use std::cell::RefCell;
use std::sync::Arc;

use rustls::crypto::{GetRandomFailed, SecureRandom};
use rustls::time_provider::TimeProvider;
use rustls_pki_types::UnixTime;

use crate::csprng::Drbg;

/// What one lend puts in reach of rustls on this thread.
struct Lent {
    rng: Drbg,
    unix_time: UnixTime,
}

thread_local! {
    static LENT: RefCell<Option<Lent>> = const { RefCell::new(None) };
}

/// A machine's TLS randomness: a generator it lends to rustls around each
/// call that may run a handshake step.
pub struct TlsInputs {
    /// `None` only while lent.
    rng: Option<Drbg>,
}

impl std::fmt::Debug for TlsInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsInputs")
            .field("available", &self.rng.is_some())
            .finish()
    }
}

impl TlsInputs {
    /// Inputs drawing from `rng` (seeded from OS entropy by daemons, from the
    /// world seed by the simulator).
    pub fn new(rng: Drbg) -> Self {
        Self { rng: Some(rng) }
    }

    /// Lends the generator and `unix_time` to rustls on this thread until the
    /// returned guard drops; the generator then comes back, advanced. Lends
    /// nest: an inner lend hides the outer one until it ends.
    pub fn lend(&mut self, unix_time: UnixTime) -> LentTlsInputs<'_> {
        let lent = self.rng.take().map(|rng| Lent { rng, unix_time });
        let hidden = LENT.with(|slot| slot.replace(lent));
        LentTlsInputs {
            home: &mut self.rng,
            hidden,
        }
    }
}

/// Keeps a machine's TLS inputs lent; dropping it takes them back.
#[must_use = "the inputs are taken back as soon as the guard drops"]
pub struct LentTlsInputs<'a> {
    home: &'a mut Option<Drbg>,
    /// What an enclosing lend had put in the slot.
    hidden: Option<Lent>,
}

impl std::fmt::Debug for LentTlsInputs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LentTlsInputs")
    }
}

impl Drop for LentTlsInputs<'_> {
    fn drop(&mut self) {
        let ours = LENT.with(|slot| slot.replace(self.hidden.take()));
        *self.home = ours.map(|lent| lent.rng);
    }
}

/// Fills `dest` from the generator lent on this thread.
pub(super) fn draw(dest: &mut [u8]) -> Result<(), GetRandomFailed> {
    LENT.with(|slot| match slot.borrow_mut().as_mut() {
        Some(lent) => {
            lent.rng.fill(dest);
            Ok(())
        }
        None => {
            tracing::error!("TLS randomness requested outside a lend: failing closed");
            Err(GetRandomFailed)
        }
    })
}

/// The wall-clock time lent on this thread, if any.
pub(crate) fn lent_unix_time() -> Option<UnixTime> {
    LENT.with(|slot| slot.borrow().as_ref().map(|lent| lent.unix_time))
}

/// rustls' `secure_random`: whatever generator is lent on this thread.
#[derive(Debug)]
pub(super) struct LentRandom;

impl SecureRandom for LentRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        draw(buf)
    }
}

/// rustls' clock: the wall-clock time lent on this thread (certificate
/// validity is checked against it; without a lend the check fails).
#[derive(Debug)]
struct LentWallTime;

impl TimeProvider for LentWallTime {
    fn current_time(&self) -> Option<UnixTime> {
        let now = lent_unix_time();
        if now.is_none() {
            tracing::error!("TLS wall-clock time requested outside a lend: failing closed");
        }
        now
    }
}

/// The time provider every control-plane configuration uses.
pub(super) fn wall_time() -> Arc<dyn TimeProvider> {
    Arc::new(LentWallTime)
}
