//! Ending a source's waiting read when the host needs the instance for something else.
//!
//! A source's [`read_batch`](crate::connector::Source::read_batch) waits until it has data
//! (ABI 4): an idle source costs no boundary crossing and no host timer. One request runs at
//! a time per instance, so while a read waits the host cannot call, write, pause or close the
//! instance; instead it *interrupts* the read, which then answers
//! [`Response::Interrupted`](crate::protocol::Response::Interrupted) at once (the read's
//! future is dropped at its await), and the host sends its request, then reads again.
//!
//! Reads are numbered by the host (the frame id out of process, a per-instance counter in
//! process); an interrupt names the read it is for, so one that arrives before its read has
//! started (out of process, the two travel separately) still ends that read and no other.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The interrupts of one instance's reads (shared by the host's side of a transport and the
/// adapter's reads). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ReadInterrupts(Arc<Mutex<Slot>>);

#[derive(Debug, Default)]
struct Slot {
    /// Every read up to this id is interrupted (ids only grow).
    interrupted_through: u64,
    /// The read waiting now, and how to end it.
    waiting: Option<(u64, oneshot::Sender<()>)>,
}

/// One read's claim on [`ReadInterrupts`]: what the adapter needs to make read `id`
/// interruptible.
#[derive(Debug, Clone)]
pub struct ReadTicket {
    interrupts: ReadInterrupts,
    id: u64,
}

impl ReadInterrupts {
    /// No read interrupted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends read `id`: now if it waits, at its start if it has not started yet; a read that
    /// already answered is not affected (nor is any later one).
    pub fn interrupt(&self, id: u64) {
        let mut slot = self.lock();
        slot.interrupted_through = slot.interrupted_through.max(id);
        if slot.waiting.as_ref().is_some_and(|(w, _)| *w <= id)
            && let Some((_, end)) = slot.waiting.take()
        {
            let _ = end.send(());
        }
    }

    /// The ticket of read `id`.
    pub fn ticket(&self, id: u64) -> ReadTicket {
        ReadTicket {
            interrupts: self.clone(),
            id,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        // Nothing panics while the lock is held; a poisoned lock still holds valid ids.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ReadTicket {
    /// The read's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Starts waiting: `None` when the read was interrupted before it started, else the
    /// receiver that fires when it is.
    pub(crate) fn arm(&self) -> Option<oneshot::Receiver<()>> {
        let mut slot = self.interrupts.lock();
        if self.id <= slot.interrupted_through {
            return None;
        }
        let (end, ended) = oneshot::channel();
        slot.waiting = Some((self.id, end));
        Some(ended)
    }

    /// The read answered: forget it.
    pub(crate) fn disarm(&self) {
        let mut slot = self.interrupts.lock();
        if slot.waiting.as_ref().is_some_and(|(w, _)| *w == self.id) {
            slot.waiting = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupt_ends_the_waiting_read_and_only_it() {
        let interrupts = ReadInterrupts::new();
        let first = interrupts.ticket(1);
        let mut ended = first.arm().expect("not interrupted yet");
        interrupts.interrupt(1);
        assert!(ended.try_recv().is_ok(), "the waiting read is ended");
        first.disarm();
        // The next read is not affected by the earlier interrupt.
        let second = interrupts.ticket(2);
        let mut ended = second.arm().expect("a later read starts normally");
        assert!(ended.try_recv().is_err());
    }

    #[test]
    fn an_interrupt_that_comes_first_ends_its_read_at_the_start() {
        let interrupts = ReadInterrupts::new();
        interrupts.interrupt(7);
        assert!(interrupts.ticket(7).arm().is_none());
        assert!(interrupts.ticket(8).arm().is_some());
    }
}
