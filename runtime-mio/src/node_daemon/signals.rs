//! Signals, on a thread of their own: SIGTERM and SIGINT stop the driver
//! (a second one exits at once, with status 1, in case closing hangs);
//! SIGHUP raises a flag and wakes the driver, and the event loop reloads
//! the configuration between two pumps, never while a datagram is handled.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::flag;
use signal_hook::iterator::{Handle, Signals};

use crate::DriverHandle;

/// A reload asked for by SIGHUP and not done yet; several signals before
/// the event loop looks are one reload.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReloadRequest(Arc<AtomicBool>);

impl ReloadRequest {
    /// True when a reload is waiting.
    pub(crate) fn pending(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Takes the waiting reload, if any.
    pub(crate) fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }

    fn raise(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The signal thread; closing it (on drop) restores nothing else, as the
/// process is ending.
#[derive(Debug)]
pub(crate) struct SignalThread {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl SignalThread {
    /// Starts following signals for `driver`; SIGHUP raises `reload`.
    ///
    /// # Errors
    /// When the handlers cannot be installed or the thread cannot start.
    pub(crate) fn start(driver: DriverHandle, reload: ReloadRequest) -> io::Result<Self> {
        let stopping = Arc::new(AtomicBool::new(false));
        for signal in [SIGTERM, SIGINT] {
            // Registered first, so it sees the flag as it was before this
            // signal: only a second signal exits abruptly.
            flag::register_conditional_shutdown(signal, 1, Arc::clone(&stopping))?;
            flag::register(signal, Arc::clone(&stopping))?;
        }
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("signals".to_owned())
            .spawn(move || {
                for signal in signals.forever() {
                    match signal {
                        SIGHUP => {
                            tracing::info!(signal = "SIGHUP", "reloading the configuration");
                            reload.raise();
                            driver.wake();
                        }
                        _ => {
                            let name = if signal == SIGTERM {
                                "SIGTERM"
                            } else {
                                "SIGINT"
                            };
                            tracing::info!(signal = name, "stopping");
                            driver.stop();
                        }
                    }
                }
            })?;
        Ok(Self {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for SignalThread {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
