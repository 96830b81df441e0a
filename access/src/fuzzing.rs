//! Drives a [`Session`] the way the event loop does, from arbitrary bytes,
//! and checks its invariants after every step. Built only for the fuzz
//! target (`access/fuzz`, `--cfg fuzzing`).
//!
//! The input is a script: each step's first byte picks an operation (bytes
//! off the wire, a well-formed frame, the oldest request's reply, time
//! passing, the node's answers changing) and the bytes after it are its
//! operands. A model beside the session counts the requests it sent
//! upstream, so that replies answer real requests as logic's would.

use std::collections::VecDeque;

use bytes::{BufMut, BytesMut};
use fishchat_codec::FrameDecoder;

use crate::device_id::DeviceIds;
use crate::send_rate::SendRate;
use crate::session::{Action, Due, Env, Flow, Rules, Session, State, Then};
use crate::upstream::{Call, Request};

const MAX_FRAME_LEN: u32 = 512;

/// The node's answers, as the script sets them.
#[derive(Default)]
struct Scripted {
    user_over_rate: bool,
    login_blocked: bool,
    replaced: bool,
}

impl Env for Scripted {
    fn take_user_send(&mut self, _user_id: u64, _now: u32) -> bool {
        !self.user_over_rate
    }
    fn login_allowed(&mut self, _now: u32) -> bool {
        !self.login_blocked
    }
    fn login_failed(&mut self, _now: u32) {}
    fn add_to_table(&mut self, _user_id: u64) -> bool {
        !self.replaced
    }
}

/// One connection's life, and the model it is checked against.
struct Run {
    rules: Rules,
    session: Session,
    env: Scripted,
    now: u32,
    input: BytesMut,
    /// Requests upstream, oldest first: true for a LOGIN.
    upstream: VecDeque<bool>,
}

/// Runs the script in `data`; panics when an invariant breaks.
pub fn drive(data: &[u8]) {
    let rules = Rules {
        login_deadline: 10,
        heartbeat_deadline: 8,
        session_refresh: 3,
        max_in_flight: 3,
        send_rate: SendRate {
            per_second: 5,
            burst: 2,
        },
        user_send_rate: SendRate {
            per_second: 7,
            burst: 3,
        },
    };
    let mut run = Run {
        session: Session::new(0, &rules),
        rules,
        env: Scripted::default(),
        now: 0,
        input: BytesMut::new(),
        upstream: VecDeque::new(),
    };
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let mut arg = || bytes.next().unwrap_or(0);
        match op % 5 {
            0 => {
                let len = usize::from(arg() % 32);
                let chunk: Vec<u8> = (0..len).map(|_| arg()).collect();
                run.input.extend_from_slice(&chunk);
                run.read();
            }
            1 => {
                let (command, request_id, len) = (arg() % 20, arg(), arg() % 24);
                let body: Vec<u8> = (0..len).map(|_| arg()).collect();
                run.input
                    .put_u32(8 + u32::try_from(body.len()).unwrap_or(0));
                run.input
                    .put_slice(&[1, 0, 0, command, 0, 0, 0, request_id]);
                run.input.put_slice(&body);
                run.read();
            }
            2 => {
                let (kind, user) = (arg(), arg());
                run.reply(kind, u64::from(user) + 1);
            }
            3 => {
                let ticks = u32::from(arg() % 16);
                run.tick(ticks);
            }
            _ => {
                let flags = arg();
                run.env = Scripted {
                    user_over_rate: flags & 1 != 0,
                    login_blocked: flags & 2 != 0,
                    replaced: flags & 4 != 0,
                };
            }
        }
        run.check();
    }
}

impl Run {
    /// Decodes and handles frames while the session takes them, as the loop does.
    fn read(&mut self) {
        let decoder = FrameDecoder::new(MAX_FRAME_LEN);
        loop {
            let before = self.session.state;
            let flow = self.session.flow(&self.rules);
            let frame = match decoder.decode_copied(&mut self.input) {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(err) => {
                    if flow == Flow::Continue {
                        let action = self.session.on_decode_error(&err, self.now);
                        assert!(matches!(action, Action::Refuse { .. }), "{action:?}");
                        assert_eq!(self.session.state, State::Closing);
                    }
                    self.input.clear();
                    return;
                }
            };
            if flow != Flow::Continue {
                // The loop would not have read it; a closing session must ignore it all the same.
                if before == State::Closing {
                    let unchanged = self.session.clone();
                    let action = self
                        .session
                        .on_frame(frame, self.now, &self.rules, &mut self.env);
                    assert_eq!(action, Action::Nothing);
                    assert_eq!(self.session, unchanged, "a closing session changed");
                }
                self.input.clear();
                return;
            }
            let action = self
                .session
                .on_frame(frame, self.now, &self.rules, &mut self.env);
            match action {
                Action::Upstream { request, .. } => {
                    let login = matches!(request, Request::Call(Call::Login(_)));
                    assert!(
                        if login {
                            before == State::AwaitingLogin
                        } else {
                            before == State::Active
                        },
                        "{request:?} sent upstream from {before:?}"
                    );
                    self.upstream.push_back(login);
                }
                Action::Refuse { .. } | Action::Close => {
                    assert_eq!(self.session.state, State::Closing);
                }
                Action::SendRefused { .. } => assert_eq!(before, State::Active),
                Action::Pong { refresh, .. } => {
                    assert!(!refresh || before == State::Active);
                }
                Action::Nothing => panic!("an open session ignored a frame"),
            }
        }
    }

    /// Answers the oldest request upstream, as logic would.
    fn reply(&mut self, kind: u8, user_id: u64) {
        let Some(login) = self.upstream.pop_front() else {
            return;
        };
        let then = match (login, kind % 3) {
            (false, _) => Then::Nothing,
            (true, 0) => Then::LoggedIn {
                user_id,
                device_id: DeviceIds::default().intern("fuzz"),
            },
            (true, kind) => Then::LoginRefused {
                bad_token: kind == 1,
            },
        };
        let before = self.session.clone();
        let after = self
            .session
            .on_reply(then, self.now, &self.rules, &mut self.env);
        if after.activated.is_some() {
            assert_eq!(before.state, State::LoggingIn);
            assert_eq!(self.session.state, State::Active);
        }
        if after.kick.is_some() {
            self.session.close(self.now);
        }
        if after.resume {
            assert!(before.paused && self.session.in_flight < self.rules.max_in_flight);
        }
    }

    /// Lets `ticks` pass, then runs the deadline as the loop's sweep would.
    fn tick(&mut self, ticks: u32) {
        self.now = self.now.saturating_add(ticks);
        match self.session.on_deadline(self.now) {
            Due::Later(at) => assert!(at > self.now),
            Due::Kick(_) => {
                assert_ne!(self.session.state, State::Closing);
                self.session.close(self.now);
            }
            Due::Close => {
                // The connection is gone; the next one starts afresh.
                assert_eq!(self.session.state, State::Closing);
                self.session = Session::new(self.now, &self.rules);
                self.input.clear();
                self.upstream.clear();
            }
        }
    }

    fn check(&self) {
        let s = &self.session;
        assert_eq!(
            usize::from(s.in_flight),
            self.upstream.len(),
            "in flight against requests upstream"
        );
        assert!(s.in_flight <= self.rules.max_in_flight);
        let logins = self.upstream.iter().filter(|login| **login).count();
        assert!(logins <= 1, "{logins} logins upstream at once");
        match s.state {
            State::AwaitingLogin => assert_eq!((s.user_id, logins), (0, 0)),
            State::LoggingIn => assert_eq!((s.user_id, logins), (0, 1)),
            State::Active => {
                assert_ne!(s.user_id, 0);
                assert!(s.deadline <= self.now + self.rules.heartbeat_deadline);
            }
            State::Closing => assert!(s.deadline <= self.now + crate::session::CLOSE_LINGER_TICKS),
        }
    }
}
