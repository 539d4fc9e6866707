//! A connected socket as the rest of the server sees it: a bounded queue of frames
//! to write, and a way to ask it to close.

use std::collections::VecDeque;
use std::sync::Mutex;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

use crate::protocol::{CloseCode, SocketId};

/// A finished frame: serialized once, its bytes shared by every socket it goes to.
pub type Frame = Utf8Bytes;

/// The handle through which the hub writes to one socket.
///
/// Writing never waits: a frame that finds the queue full closes the socket with
/// 4100 instead, so one slow client never holds up a publisher or other clients.
///
/// The queue is a plain `VecDeque` behind a mutex rather than a channel: an idle
/// socket then holds no queue memory at all, where a channel allocates a block of
/// slots up front. The mutex is held only to push or pop.
#[derive(Debug)]
pub struct Peer {
    /// The socket's id.
    pub socket_id: SocketId,
    /// Frames waiting to be written, and the close asked for, if any.
    state: Mutex<PeerState>,
    /// Wakes the socket's task when a frame is queued or a close is asked for.
    wake: Notify,
    /// Most frames the queue may hold.
    capacity: usize,
}

#[derive(Debug, Default)]
struct PeerState {
    queue: VecDeque<Frame>,
    close: Option<CloseCode>,
}

/// What the socket's task should do next.
#[derive(Debug)]
pub enum Outgoing {
    /// Write this frame.
    Frame(Frame),
    /// Close with this code; frames still queued are dropped.
    Close(CloseCode),
}

impl Peer {
    /// A peer whose queue holds at most `capacity` frames.
    pub fn new(socket_id: SocketId, capacity: usize) -> Peer {
        Peer {
            socket_id,
            state: Mutex::default(),
            wake: Notify::new(),
            capacity,
        }
    }

    /// Queues a frame. A full queue closes the socket as too slow; a socket that is
    /// closing drops the frame.
    pub fn send(&self, frame: Frame) {
        {
            let mut state = self.lock();
            if state.close.is_some() {
                return;
            }
            if state.queue.len() >= self.capacity {
                state.close = Some(CloseCode::OverCapacity);
                state.queue = VecDeque::new();
            } else {
                state.queue.push_back(frame);
            }
        }
        self.wake.notify_one();
    }

    /// Asks the socket to close with `code`. The first request wins.
    pub fn close(&self, code: CloseCode) {
        self.lock().close.get_or_insert(code);
        self.wake.notify_one();
    }

    /// Waits for the next thing to do: a close request, else the oldest frame.
    pub async fn next(&self) -> Outgoing {
        loop {
            if let Some(outgoing) = self.try_next() {
                return outgoing;
            }
            // A wake that lands between the check and here leaves a permit behind,
            // so this cannot miss one.
            self.wake.notified().await;
        }
    }

    /// Waits until a close is asked for, and returns its code.
    pub async fn closing(&self) -> CloseCode {
        loop {
            if let Some(code) = self.lock().close {
                return code;
            }
            // Frames queued meanwhile also wake this; `next` finds them by looking at
            // the queue, not at the wake-ups, so none is lost.
            self.wake.notified().await;
        }
    }

    /// The next thing to do, if there is one now.
    pub fn try_next(&self) -> Option<Outgoing> {
        let mut state = self.lock();
        if let Some(code) = state.close {
            return Some(Outgoing::Close(code));
        }
        state.queue.pop_front().map(Outgoing::Frame)
    }

    /// The next queued frame, if there is one now and no close was asked for.
    pub fn try_next_frame(&self) -> Option<Frame> {
        let mut state = self.lock();
        if state.close.is_some() {
            return None;
        }
        state.queue.pop_front()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PeerState> {
        // The lock is never held across code that can panic, so it is never
        // poisoned; recovering the guard keeps that true even if it were.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &'static str) -> Frame {
        Frame::from_static(text)
    }

    #[test]
    fn frames_come_out_in_order() {
        let peer = Peer::new(SocketId::random(), 4);
        peer.send(frame("a"));
        peer.send(frame("b"));
        assert!(matches!(peer.try_next(), Some(Outgoing::Frame(f)) if f == "a"));
        assert!(matches!(peer.try_next(), Some(Outgoing::Frame(f)) if f == "b"));
        assert!(peer.try_next().is_none());
    }

    #[test]
    fn a_full_queue_closes_the_socket_as_over_capacity() {
        let peer = Peer::new(SocketId::random(), 2);
        for _ in 0..3 {
            peer.send(frame("x"));
        }
        assert!(matches!(
            peer.try_next(),
            Some(Outgoing::Close(CloseCode::OverCapacity))
        ));
    }

    #[test]
    fn the_first_close_wins() {
        let peer = Peer::new(SocketId::random(), 2);
        peer.close(CloseCode::ReconnectNow);
        peer.close(CloseCode::PongTimeout);
        assert!(matches!(
            peer.try_next(),
            Some(Outgoing::Close(CloseCode::ReconnectNow))
        ));
    }
}
