//! The tokio run loop: pump the machine, then await any readable socket or
//! the machine's next deadline.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use tokio::time::Sleep;
use transitloom_proto_core::driver::{Clock, Pump, PumpReport, Sink};
use transitloom_proto_core::machine::StateMachine;
use transitloom_runtime_mio::clock::{earliest, SystemClock};
use transitloom_runtime_mio::{DEFAULT_BATCH, DEFAULT_BUDGET};

use crate::io::TokioIo;

/// Why [`TokioDriver::run_until`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The caller's condition held.
    Done,
    /// The deadline passed first.
    Deadline,
}

/// Runs one [`StateMachine`] over tokio sockets inside a tokio runtime (IO
/// and time enabled). Every future it returns is cancel-safe: dropping one
/// loses nothing, so `tokio::select!` is how it is stopped.
#[derive(Debug)]
pub struct TokioDriver<M> {
    machine: M,
    io: TokioIo,
    pump: Pump,
    clock: SystemClock,
    sleep: Option<Pin<Box<Sleep>>>,
    report: PumpReport,
    /// The embedder touched the machine: it may have outputs to drain.
    dirty: bool,
}

impl<M: StateMachine> TokioDriver<M> {
    /// A driver with the default batch and budget.
    pub fn new(machine: M) -> Self {
        Self::with_pump(machine, Pump::new(DEFAULT_BATCH, DEFAULT_BUDGET))
    }

    /// A driver with a pump of the caller's sizing.
    pub fn with_pump(machine: M, pump: Pump) -> Self {
        Self {
            machine,
            io: TokioIo::new(),
            pump,
            clock: SystemClock,
            sleep: None,
            report: PumpReport::default(),
            dirty: true,
        }
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
    pub fn io(&self) -> &TokioIo {
        &self.io
    }

    /// What the last pump did.
    pub fn last_report(&self) -> PumpReport {
        self.report
    }

    /// Gives the machine back.
    pub fn into_machine(self) -> M {
        self.machine
    }

    /// Receives what is ready, fires due timers and drains every output,
    /// without waiting. Must run inside the tokio runtime (it may bind).
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

    /// Waits until a socket is readable, the machine's next deadline or
    /// `until`; when work is pending it only yields to the scheduler once.
    pub async fn wait(&mut self, until: Option<Instant>) {
        if self.dirty || self.report.more_pending || self.io.has_stream_events() {
            tokio::task::yield_now().await;
            return;
        }
        let deadline =
            earliest(self.report.next_deadline, until).map(tokio::time::Instant::from_std);
        let mut sleep = match (deadline, &mut self.sleep) {
            (None, _) => None,
            (Some(at), Some(sleep)) => {
                sleep.as_mut().reset(at);
                Some(sleep)
            }
            (Some(at), slot @ None) => Some(slot.insert(Box::pin(tokio::time::sleep_until(at)))),
        };
        let io = &mut self.io;
        poll_fn(|cx| {
            if io.poll_any_readable(cx).is_ready() {
                return Poll::Ready(());
            }
            match sleep.as_mut() {
                Some(sleep) => sleep.as_mut().poll(cx),
                None => Poll::Pending,
            }
        })
        .await;
    }

    /// Pumps and waits until `done` holds after a pump or `deadline` passes.
    pub async fn run_until<S, F>(
        &mut self,
        sink: &mut S,
        deadline: Option<Instant>,
        mut done: F,
    ) -> Exit
    where
        S: Sink<M::Event> + ?Sized,
        F: FnMut(&M, &S) -> bool,
    {
        loop {
            self.pump(sink);
            if done(&self.machine, sink) {
                return Exit::Done;
            }
            if deadline.is_some_and(|at| self.clock.now() >= at) {
                return Exit::Deadline;
            }
            self.wait(deadline).await;
        }
    }
}
