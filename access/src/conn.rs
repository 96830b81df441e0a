//! One client connection as an event loop keeps it.
//!
//! An idle connection is a few dozen bytes: the socket, its ids, its deadline
//! and its state. Buffers exist only while there is something in them: a
//! partial frame read, or frames not yet written. They live behind one
//! optional box, allocated when first needed and freed when both empty.
//! A TLS connection keeps its TLS state in that box too, so the box stays
//! while the connection lives; plain connections pay nothing for TLS.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};

use bytes::{Bytes, BytesMut};
use mio::net::TcpStream;

use crate::device_id::DeviceId;
use crate::session::Session;
use crate::tls::TlsConn;

/// `Conn::out_last` of a connection with no frame in the outbox.
pub const NO_FRAME: u32 = u32::MAX;

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
    /// The TLS state of a TLS connection: frames go through it, never `out`.
    tls: Option<Box<TlsConn>>,
}

/// One connection.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Unique in this process; tells a reused slab slot apart.
    pub id: u64,
    /// The device id of the login, empty before.
    pub device_id: DeviceId,
    /// The client protocol's state.
    pub session: Session,
    /// Queued on the loop's list of connections to flush.
    pub dirty: bool,
    /// The index of its last frame in the loop's outbox, [`NO_FRAME`] when it
    /// has none there (in the record's padding: it costs no byte).
    pub out_last: u32,
    bufs: Option<Box<Bufs>>,
}

impl Conn {
    /// A fresh connection in `session`.
    pub fn new(stream: TcpStream, id: u64, session: Session) -> Self {
        Self {
            stream,
            id,
            device_id: DeviceId::default(),
            session,
            dirty: false,
            out_last: NO_FRAME,
            bufs: None,
        }
    }

    /// A fresh TLS connection, its handshake not begun.
    pub fn with_tls(stream: TcpStream, id: u64, session: Session, tls: TlsConn) -> Self {
        let mut conn = Self::new(stream, id, session);
        conn.bufs().tls = Some(Box::new(tls));
        conn
    }

    /// Reads from the socket (plaintext, through TLS when the connection
    /// has it). As a socket read answers, and `Interrupted` also when TLS
    /// bytes were taken that gave no plaintext yet: read again.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let stream = &self.stream;
        match self.bufs.as_mut().and_then(|b| b.tls.as_deref_mut()) {
            Some(tls) => tls.read(stream, buf),
            None => (&*stream).read(buf),
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
        self.bufs.as_ref().map_or(0, |b| {
            b.out_bytes + b.tls.as_ref().map_or(0, |tls| tls.unsent())
        })
    }

    /// Queues a frame for writing.
    pub fn queue(&mut self, frame: Bytes) {
        let bufs = self.bufs();
        bufs.out_bytes += frame.len();
        bufs.out.push_back(frame);
    }

    /// Drops every queued frame not yet started, keeping a partly written one
    /// so that the stream stays well framed.
    /// (TLS output is already encrypted and stays: a cut record would
    /// break the stream, and the connection closes after its KICK anyway.)
    pub fn drop_unsent(&mut self) {
        if let Some(bufs) = &mut self.bufs
            && bufs.tls.is_none()
        {
            let keep = usize::from(bufs.out_offset > 0);
            bufs.out.truncate(keep);
            bufs.out_bytes = bufs.out.front().map_or(0, |f| f.len() - bufs.out_offset);
        }
    }

    /// Writes `frames` (taken from the slice) in order after anything
    /// already queued: straight to the socket when nothing is, so a frame the
    /// socket takes at once costs no buffer; what it does not take is queued.
    /// Returns the bytes written.
    pub fn write_or_queue(&mut self, frames: &mut [Bytes]) -> io::Result<usize> {
        let stream = &self.stream;
        if let Some(tls) = self.bufs.as_mut().and_then(|b| b.tls.as_deref_mut()) {
            // rustls keeps what the socket does not take, in order.
            return tls.write(stream, frames);
        }
        if self.queued() > 0 {
            frames
                .iter_mut()
                .for_each(|f| self.queue(std::mem::take(f)));
            return Ok(0);
        }
        let mut written = 0;
        // Frames wholly written, and bytes written of the next one.
        let (mut done, mut offset) = (0, 0);
        while done < frames.len() {
            let batch = &frames[done..frames.len().min(done + MAX_IOVECS)];
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            for (i, (slot, frame)) in slices.iter_mut().zip(batch).enumerate() {
                let start = if i == 0 { offset } else { 0 };
                *slot = IoSlice::new(&frame[start..]);
            }
            let mut n = match (&self.stream).write_vectored(&slices[..batch.len()]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            written += n;
            while n > 0 && done < frames.len() {
                let rest = frames[done].len() - offset;
                if n < rest {
                    offset += n;
                    break;
                }
                n -= rest;
                done += 1;
                offset = 0;
            }
        }
        if done < frames.len() {
            // A partly written frame is queued whole with its offset, so that
            // `drop_unsent` knows to keep it and the stream stays well framed.
            let bufs = self.bufs();
            for frame in &mut frames[done..] {
                bufs.out_bytes += frame.len();
                bufs.out.push_back(std::mem::take(frame));
            }
            bufs.out_offset = offset;
            bufs.out_bytes -= offset;
        }
        Ok(written)
    }

    /// Writes queued frames until done or the socket is full; returns bytes written.
    pub fn flush(&mut self) -> io::Result<usize> {
        let stream = &self.stream;
        let Some(bufs) = &mut self.bufs else {
            return Ok(0);
        };
        if let Some(tls) = &mut bufs.tls {
            return tls.flush(stream);
        }
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
            .is_some_and(|b| b.read.is_empty() && b.out.is_empty() && b.tls.is_none())
        {
            self.bufs = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;

    use crate::send_rate::SendRate;
    use crate::session::{Rules, Session};

    use super::*;

    fn pair() -> (Conn, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        let rules = Rules {
            login_deadline: 1,
            heartbeat_deadline: 1,
            session_refresh: 1,
            max_in_flight: 1,
            send_rate: SendRate {
                per_second: 0,
                burst: 0,
            },
            user_send_rate: SendRate {
                per_second: 0,
                burst: 0,
            },
        };
        let conn = Conn::new(TcpStream::from_std(server), 1, Session::new(0, &rules));
        (conn, client)
    }

    #[test]
    fn frames_the_socket_takes_go_straight_out_and_the_rest_is_queued_in_order() {
        let (mut conn, mut client) = pair();
        let mut frames = vec![Bytes::from_static(b"pong"), Bytes::from_static(b"ack")];
        assert_eq!(conn.write_or_queue(&mut frames).expect("writes"), 7);
        assert!(conn.bufs.is_none(), "nothing queued, nothing allocated");

        // More than any socket buffer takes: the rest is queued, the frame the
        // socket took part of is kept whole when the unsent ones are dropped, and
        // the stream stays well framed.
        const SIZE: usize = 100_003;
        let big: Vec<Bytes> = (0..64u8).map(|i| Bytes::from(vec![i; SIZE])).collect();
        let mut frames = big.clone();
        let first = conn.write_or_queue(&mut frames).expect("writes");
        let total = SIZE * big.len();
        assert!(first < total, "the socket took everything");
        assert_eq!(conn.queued(), total - first);
        let (cut, partial) = (first / SIZE, first % SIZE);
        assert_eq!(conn.bufs.as_ref().map(|b| b.out_offset), Some(partial));
        conn.drop_unsent();
        assert_eq!(conn.queued(), if partial > 0 { SIZE - partial } else { 0 });
        let mut frames = vec![Bytes::from_static(b"last")];
        conn.write_or_queue(&mut frames).expect("writes or queues");

        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            client.read_to_end(&mut got).expect("reads");
            got
        });
        while conn.queued() > 0 {
            conn.flush().expect("flushes");
            std::thread::yield_now();
        }
        assert!(conn.bufs.is_none(), "buffers freed once written");
        drop(conn);
        let got = reader.join().expect("reader");
        let mut want = b"pongack".to_vec();
        let kept = if partial > 0 { cut + 1 } else { cut };
        big[..kept].iter().for_each(|f| want.extend_from_slice(f));
        want.extend_from_slice(b"last");
        assert!(got == want, "bytes out of order or lost");
    }

    #[test]
    fn an_idle_connection_is_small() {
        // The per-connection budget is 128 bytes in all and the slab record is its
        // biggest part (64 bytes in release builds): buffers held inline (a BytesMut
        // is 32 bytes, a VecDeque 32) or a fat pointer would blow it. Debug builds
        // add mio's selector id to the socket.
        assert!(
            size_of::<Conn>() <= 64 + 16 * usize::from(cfg!(debug_assertions)),
            "Conn is {} bytes",
            size_of::<Conn>()
        );
    }
}
