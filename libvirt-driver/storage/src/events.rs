//! Pool events for `virConnectStoragePoolEventRegisterAny`: lifecycle (event id 0) and refresh (event id 1).

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

use crate::model::PoolRef;

/// `virStoragePoolEventID`: lifecycle.
pub const EVENT_ID_LIFECYCLE: i32 = 0;
/// `virStoragePoolEventID`: refresh.
pub const EVENT_ID_REFRESH: i32 = 1;

/// `virStoragePoolEventLifecycleType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Lifecycle {
    /// Defined (persistent config written).
    Defined = 0,
    /// Undefined.
    Undefined = 1,
    /// Started.
    Started = 2,
    /// Stopped.
    Stopped = 3,
    /// Built (`pool-build`).
    Created = 4,
    /// Deleted (`pool-delete`).
    Deleted = 5,
}

/// What happened to a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolEventKind {
    /// A lifecycle event; the wire message carries `event as i32` and detail 0.
    Lifecycle(Lifecycle),
    /// The pool's volumes were rescanned (also after an upload finishes).
    Refresh,
}

impl PoolEventKind {
    /// The event id a client registers for (`EVENT_ID_LIFECYCLE` or `EVENT_ID_REFRESH`).
    pub fn event_id(self) -> i32 {
        match self {
            PoolEventKind::Lifecycle(_) => EVENT_ID_LIFECYCLE,
            PoolEventKind::Refresh => EVENT_ID_REFRESH,
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEvent {
    /// The pool it concerns.
    pub pool: PoolRef,
    /// What happened.
    pub kind: PoolEventKind,
}

/// The subscriber table: the last id handed out and the live channels.
#[derive(Default)]
struct Subscribers {
    last_id: u64,
    channels: Vec<(u64, Sender<PoolEvent>)>,
}

/// Subscribers, each a channel; a subscriber whose receiver is gone is dropped on the next event.
#[derive(Default)]
pub(crate) struct EventBus {
    subscribers: Mutex<Subscribers>,
}

impl EventBus {
    pub(crate) fn subscribe(&self) -> (u64, Receiver<PoolEvent>) {
        let (tx, rx) = channel();
        let mut guard = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        guard.last_id += 1;
        let id = guard.last_id;
        guard.channels.push((id, tx));
        (id, rx)
    }

    pub(crate) fn unsubscribe(&self, id: u64) -> bool {
        let mut guard = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        let before = guard.channels.len();
        guard.channels.retain(|(sid, _)| *sid != id);
        guard.channels.len() != before
    }

    pub(crate) fn emit(&self, pool: &PoolRef, kind: PoolEventKind) {
        let event = PoolEvent {
            pool: pool.clone(),
            kind,
        };
        let mut guard = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .channels
            .retain(|(_, tx)| tx.send(event.clone()).is_ok());
    }
}
