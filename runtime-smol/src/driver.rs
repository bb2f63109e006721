//! The async-io run loop: pump the machine, then await any readable socket
//! or the machine's next deadline.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use async_io::Timer;
use transitloom_proto_core::driver::{Clock, Pump, PumpReport, Sink};
use transitloom_proto_core::machine::StateMachine;
use transitloom_runtime_mio::clock::{earliest, SystemClock};
use transitloom_runtime_mio::{DEFAULT_BATCH, DEFAULT_BUDGET};

use crate::io::SmolIo;

/// Why [`SmolDriver::run_until`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The caller's condition held.
    Done,
    /// The deadline passed first.
    Deadline,
}

/// Runs one [`StateMachine`] on async-io's reactor, from any executor
/// (`smol::block_on`, `async_io::block_on`, a spawned task). Every future it
/// returns is cancel-safe: dropping one loses nothing, so it composes with
/// the program's own futures through `future::or` or a select.
#[derive(Debug)]
pub struct SmolDriver<M> {
    machine: M,
    io: SmolIo,
    pump: Pump,
    clock: SystemClock,
    timer: Timer,
    report: PumpReport,
    /// The embedder touched the machine: it may have outputs to drain.
    dirty: bool,
}

impl<M: StateMachine> SmolDriver<M> {
    /// A driver with the default batch and budget.
    pub fn new(machine: M) -> Self {
        Self::with_pump(machine, Pump::new(DEFAULT_BATCH, DEFAULT_BUDGET))
    }

    /// A driver with a pump of the caller's sizing.
    pub fn with_pump(machine: M, pump: Pump) -> Self {
        Self {
            machine,
            io: SmolIo::new(),
            pump,
            clock: SystemClock,
            timer: Timer::never(),
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
    pub fn io(&self) -> &SmolIo {
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

    /// Waits until a socket is readable, the machine's next deadline or
    /// `until`; when work is pending it only yields to the executor once.
    pub async fn wait(&mut self, until: Option<Instant>) {
        if self.dirty || self.report.more_pending || self.io.has_readable() {
            yield_now().await;
            return;
        }
        let deadline = earliest(self.report.next_deadline, until);
        match deadline {
            Some(at) => self.timer.set_at(at),
            None => self.timer = Timer::never(),
        }
        let (io, timer) = (&mut self.io, &mut self.timer);
        poll_fn(|cx| {
            if io.poll_readable(cx).is_ready() {
                return Poll::Ready(());
            }
            Pin::new(&mut *timer).poll(cx).map(|_| ())
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

/// Lets the executor run other tasks once.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}
