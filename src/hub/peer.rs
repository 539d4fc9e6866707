//! A connected socket as the rest of the server sees it: a bounded queue of frames
//! to write, and a way to ask it to close.

use std::sync::atomic::{AtomicU16, Ordering};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{Notify, mpsc};

use crate::protocol::{CloseCode, SocketId};

/// A finished frame: serialized once, its bytes shared by every socket it goes to.
pub type Frame = Utf8Bytes;

/// The handle through which the hub writes to one socket.
///
/// Writing never waits: a frame that finds the queue full closes the socket with
/// 4100 instead, so one slow client never holds up a publisher or other clients.
#[derive(Debug)]
pub struct Peer {
    /// The socket's id.
    pub socket_id: SocketId,
    /// Frames waiting for the socket's task to write them.
    queue: mpsc::Sender<Frame>,
    /// Wakes the socket's task when someone asks it to close.
    close_requested: Notify,
    /// The close code asked for, 0 while none is.
    close_code: AtomicU16,
}

impl Peer {
    /// A peer and the receiving end of its queue, which holds at most `capacity`
    /// frames.
    pub fn new(socket_id: SocketId, capacity: usize) -> (Peer, mpsc::Receiver<Frame>) {
        let (queue, frames) = mpsc::channel(capacity);
        let peer = Peer {
            socket_id,
            queue,
            close_requested: Notify::new(),
            close_code: AtomicU16::new(0),
        };
        (peer, frames)
    }

    /// Queues a frame. A full queue closes the socket as too slow; a closed one
    /// (the socket is gone) drops the frame.
    pub fn send(&self, frame: Frame) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(frame) {
            self.close(CloseCode::OverCapacity);
        }
    }

    /// Asks the socket to close with `code`. The first request wins.
    pub fn close(&self, code: CloseCode) {
        let asked =
            self.close_code
                .compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire);
        if asked.is_ok() {
            self.close_requested.notify_one();
        }
    }

    /// Waits until a close is requested and returns the code asked for.
    pub async fn close_requested(&self) -> CloseCode {
        loop {
            self.close_requested.notified().await;
            if let Some(code) = CloseCode::from_code(self.close_code.load(Ordering::Acquire)) {
                return code;
            }
        }
    }
}
