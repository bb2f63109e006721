//! The mio run loop: pump the machine, then poll until a socket is readable,
//! the machine's next deadline, or a wake from another thread.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mio::{Events, Poll, Waker};
use transitloom_proto_core::driver::{Clock, Pump, PumpReport, Sink};
use transitloom_proto_core::machine::StateMachine;

use crate::clock::{earliest, SystemClock};
use crate::io::{MioIo, WAKER_TOKEN};

/// Receive slots per batch: one recvmmsg call's worth in quinn-udp.
pub const DEFAULT_BATCH: usize = quinn_udp::BATCH_SIZE;
/// Datagrams fed to the machine per pump before it yields to timers.
pub const DEFAULT_BUDGET: usize = 1024;

/// Why [`MioDriver::run_until`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The caller's condition held.
    Done,
    /// The deadline passed first.
    Deadline,
    /// [`DriverHandle::stop`] was called.
    Stopped,
}

/// Wakes or stops a [`MioDriver`] from another thread.
#[derive(Debug, Clone)]
pub struct DriverHandle {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
}

impl DriverHandle {
    /// Interrupts the driver's poll so it pumps and re-checks its condition.
    pub fn wake(&self) {
        if let Err(err) = self.waker.wake() {
            tracing::warn!(error = %err, "driver wake failed");
        }
    }

    /// Makes the current (or next) [`MioDriver::run_until`] return
    /// [`Exit::Stopped`].
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
    }
}

/// Runs one [`StateMachine`] over mio sockets on the calling thread.
#[derive(Debug)]
pub struct MioDriver<M> {
    machine: M,
    poll: Poll,
    events: Events,
    io: MioIo,
    pump: Pump,
    clock: SystemClock,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    report: PumpReport,
    /// The embedder touched the machine: it may have outputs to drain.
    dirty: bool,
}

impl<M: StateMachine> MioDriver<M> {
    /// A driver with the default batch and budget.
    ///
    /// # Errors
    /// When the poller or its waker cannot be created.
    pub fn new(machine: M) -> io::Result<Self> {
        Self::with_pump(machine, Pump::new(DEFAULT_BATCH, DEFAULT_BUDGET))
    }

    /// A driver with a pump of the caller's sizing.
    ///
    /// # Errors
    /// When the poller or its waker cannot be created.
    pub fn with_pump(machine: M, pump: Pump) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER_TOKEN)?);
        let io = MioIo::new(poll.registry().try_clone()?);
        Ok(Self {
            machine,
            poll,
            events: Events::with_capacity(256),
            io,
            pump,
            clock: SystemClock,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            report: PumpReport::default(),
            dirty: true,
        })
    }

    /// The machine.
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The machine, for commands; the next pump drains what they queue.
    pub fn machine_mut(&mut self) -> &mut M {
        self.dirty = true;
        &mut self.machine
    }

    /// The sockets and their counters.
    pub fn io(&self) -> &MioIo {
        &self.io
    }

    /// What the last pump did.
    pub fn last_report(&self) -> PumpReport {
        self.report
    }

    /// A handle to wake or stop this driver from another thread.
    pub fn handle(&self) -> DriverHandle {
        DriverHandle {
            waker: Arc::clone(&self.waker),
            stop: Arc::clone(&self.stop),
        }
    }

    /// Gives the machine back.
    pub fn into_machine(self) -> M {
        self.machine
    }

    /// Receives what is ready, fires due timers and drains every output,
    /// without waiting.
    pub fn pump<S>(&mut self, sink: &mut S) -> PumpReport
    where
        S: Sink<M::Event> + ?Sized,
    {
        self.dirty = false;
        self.report = self
            .pump
            .run(&mut self.machine, &mut self.io, &self.clock, sink);
        self.report
    }

    /// Blocks until a socket is readable, the machine's next deadline,
    /// `until`, or a wake; returns at once when work is pending.
    ///
    /// # Errors
    /// When polling fails (an interrupted poll is not an error).
    pub fn wait(&mut self, until: Option<Instant>) -> io::Result<()> {
        let pending = self.dirty || self.report.more_pending || self.io.has_readable();
        let timeout = if pending {
            Some(std::time::Duration::ZERO)
        } else {
            earliest(self.report.next_deadline, until)
                .map(|at| at.saturating_duration_since(self.clock.now()))
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(err) => return Err(err),
        }
        for event in self.events.iter() {
            if event.token() != WAKER_TOKEN {
                self.io.mark_readable(event.token());
            }
        }
        Ok(())
    }

    /// Pumps and waits until `done` holds after a pump, `deadline` passes,
    /// or the driver is stopped.
    ///
    /// # Errors
    /// When polling fails.
    pub fn run_until<S, F>(
        &mut self,
        sink: &mut S,
        deadline: Option<Instant>,
        mut done: F,
    ) -> io::Result<Exit>
    where
        S: Sink<M::Event> + ?Sized,
        F: FnMut(&M, &S) -> bool,
    {
        loop {
            self.pump(sink);
            if done(&self.machine, sink) {
                return Ok(Exit::Done);
            }
            if self.stop.swap(false, Ordering::AcqRel) {
                return Ok(Exit::Stopped);
            }
            if deadline.is_some_and(|at| self.clock.now() >= at) {
                return Ok(Exit::Deadline);
            }
            self.wait(deadline)?;
        }
    }

    /// Runs until [`DriverHandle::stop`].
    ///
    /// # Errors
    /// When polling fails.
    pub fn run<S>(&mut self, sink: &mut S) -> io::Result<()>
    where
        S: Sink<M::Event> + ?Sized,
    {
        self.run_until(sink, None, |_, _| false).map(|_| ())
    }
}
