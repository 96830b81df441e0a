//! One client connection as an event loop keeps it.
//!
//! An idle connection is a few dozen bytes: the socket, its ids, its deadline
//! and its state. Buffers exist only while there is something in them: a
//! partial frame read, or frames not yet written. They live behind one
//! optional box, allocated when first needed and freed when both empty.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::{Bytes, BytesMut};
use mio::net::TcpStream;

use crate::device_id::DeviceId;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Connected; only LOGIN and PING are accepted.
    AwaitingLogin,
    /// LOGIN sent upstream; waiting for the answer.
    LoggingIn,
    /// Logged in: acts as `user_id`.
    Active,
    /// Flushing its last frames (an error or a kick), then closed.
    Closing,
}

/// Most frames written in one `writev`.
const MAX_IOVECS: usize = 64;

/// The buffers of a busy connection.
#[derive(Debug, Default)]
pub struct Bufs {
    /// Bytes read but not yet decoded (a partial frame, or frames held back by backpressure).
    pub read: BytesMut,
    /// Frames queued for writing, oldest first.
    out: VecDeque<Bytes>,
    /// How much of the first queued frame is already written.
    out_offset: usize,
    /// Bytes queued and not yet written.
    out_bytes: usize,
}

/// One connection.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Unique in this process; tells a reused slab slot apart.
    pub id: u64,
    /// The logged-in user, 0 before login.
    pub user_id: u64,
    /// The device id of the login, empty before.
    pub device_id: DeviceId,
    /// Tick after which the connection is closed (see the loop's wheel).
    pub deadline: u32,
    /// The deadline the connection's live wheel entry was filed for.
    pub filed: u32,
    /// Tick of the last session heartbeat sent upstream.
    pub touched: u32,
    /// Requests sent upstream and not yet answered.
    pub in_flight: u16,
    /// The send rate's bucket (see `send_rate`): tokens, and the tick of their last refill.
    pub send_tokens: u16,
    pub send_refilled: u32,
    /// Life stage.
    pub state: State,
    /// Reading stopped because `in_flight` reached the cap.
    pub paused: bool,
    /// Queued on the loop's list of connections to flush.
    pub dirty: bool,
    bufs: Option<Box<Bufs>>,
}

impl Conn {
    /// A fresh connection waiting for its login until `deadline`.
    pub fn new(stream: TcpStream, id: u64, deadline: u32) -> Self {
        Self {
            stream,
            id,
            user_id: 0,
            device_id: DeviceId::default(),
            deadline,
            filed: deadline,
            touched: 0,
            in_flight: 0,
            send_tokens: u16::MAX,
            send_refilled: 0,
            state: State::AwaitingLogin,
            paused: false,
            dirty: false,
            bufs: None,
        }
    }

    /// The buffers, allocated on first use.
    pub fn bufs(&mut self) -> &mut Bufs {
        self.bufs.get_or_insert_with(Box::default)
    }

    /// True when undecoded input is held.
    pub fn has_input(&self) -> bool {
        self.bufs.as_ref().is_some_and(|b| !b.read.is_empty())
    }

    /// Takes the held input out (to decode it without borrowing the connection).
    pub fn take_input(&mut self) -> BytesMut {
        self.bufs
            .as_mut()
            .map(|b| std::mem::take(&mut b.read))
            .unwrap_or_default()
    }

    /// Keeps `input` as the connection's undecoded bytes (nothing is kept when empty).
    pub fn keep_input(&mut self, input: BytesMut) {
        if input.is_empty() {
            if let Some(bufs) = &mut self.bufs {
                bufs.read = BytesMut::new();
            }
            self.release_if_idle();
        } else {
            self.bufs().read = input;
        }
    }

    /// Bytes queued for writing.
    pub fn queued(&self) -> usize {
        self.bufs.as_ref().map_or(0, |b| b.out_bytes)
    }

    /// Queues a frame for writing.
    pub fn queue(&mut self, frame: Bytes) {
        let bufs = self.bufs();
        bufs.out_bytes += frame.len();
        bufs.out.push_back(frame);
    }

    /// Drops every queued frame not yet started, keeping a partly written one
    /// so that the stream stays well framed.
    pub fn drop_unsent(&mut self) {
        if let Some(bufs) = &mut self.bufs {
            let keep = usize::from(bufs.out_offset > 0);
            bufs.out.truncate(keep);
            bufs.out_bytes = bufs.out.front().map_or(0, |f| f.len() - bufs.out_offset);
        }
    }

    /// Writes queued frames until done or the socket is full; returns bytes written.
    pub fn flush(&mut self) -> io::Result<usize> {
        let Some(bufs) = &mut self.bufs else {
            return Ok(0);
        };
        let mut written = 0;
        while !bufs.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (i, frame) in bufs.out.iter().take(MAX_IOVECS).enumerate() {
                let start = if i == 0 { bufs.out_offset } else { 0 };
                slices[i] = IoSlice::new(&frame[start..]);
                count += 1;
            }
            let n = match (&self.stream).write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            written += n;
            bufs.out_bytes -= n;
            let mut left = n;
            while left > 0 {
                let Some(front) = bufs.out.front() else { break };
                let rest = front.len() - bufs.out_offset;
                if left >= rest {
                    left -= rest;
                    bufs.out.pop_front();
                    bufs.out_offset = 0;
                } else {
                    bufs.out_offset += left;
                    left = 0;
                }
            }
        }
        self.release_if_idle();
        Ok(written)
    }

    /// Frees the buffers once nothing is in them: an idle connection holds none.
    fn release_if_idle(&mut self) {
        if self
            .bufs
            .as_ref()
            .is_some_and(|b| b.read.is_empty() && b.out.is_empty())
        {
            self.bufs = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_is_small() {
        // The per-connection budget is 128 bytes in all and the slab record is its
        // biggest part (72 bytes in release builds): buffers held inline (a BytesMut
        // is 32 bytes, a VecDeque 32) would blow it. Debug builds add mio's
        // selector id to the socket.
        assert!(
            size_of::<Conn>() <= 72 + 8 * usize::from(cfg!(debug_assertions)),
            "Conn is {} bytes",
            size_of::<Conn>()
        );
    }
}
