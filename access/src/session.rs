//! The client protocol of one connection, as pure functions.
//!
//! A [`Session`] is the protocol's part of a connection: where it is in its
//! life, who it acts as, its deadlines, its requests in flight and its send
//! bucket. Each input (a frame, an upstream reply, a deadline) goes through
//! one function that updates the session and returns what the event loop
//! must do; the loop owns the socket, the buffers and the timers and only
//! applies those decisions. What the functions need from the rest of the
//! node (the user table, the login guard) comes through [`Env`], so every
//! rule is testable without a socket, and the fuzz target (`fuzz/`) drives
//! the same functions with arbitrary input.
//!
//! Invariants (checked by the fuzz target after every step):
//! - `Active` if and only if a user id is set; never set before a login succeeds.
//! - `in_flight` counts requests sent upstream and not answered; a frame is
//!   only taken while it is under `max_in_flight`.
//! - `Closing` is final: nothing is sent upstream or answered after it.

use std::borrow::Cow;

use fishchat_codec::pb;
use fishchat_codec::{Body, DecodeError, ErrorCode, Frame, KickReason};
use fishchat_rpc::logic::outgoing;
use prost::Message;

use crate::device_id::DeviceId;
use crate::send_rate::SendRate;
use crate::upstream::{Call, Request};

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

/// How long a closing connection may take to flush its last frame, in ticks.
pub const CLOSE_LINGER_TICKS: u32 = 20;

/// The protocol limits a session obeys, in ticks where they are times.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Time to log in.
    pub login_deadline: u32,
    /// Silence after which a logged-in connection is closed.
    pub heartbeat_deadline: u32,
    /// How often a live session is re-asserted upstream.
    pub session_refresh: u32,
    /// Requests in flight per connection.
    pub max_in_flight: u16,
    /// Sends per connection.
    pub send_rate: SendRate,
    /// Sends per user on this node, over all their connections.
    pub user_send_rate: SendRate,
}

/// What a session needs from the node around it.
pub trait Env {
    /// Takes one send from `user_id`'s bucket shared by their connections on this node.
    fn take_user_send(&mut self, user_id: u64, now: u32) -> bool;
    /// Whether this connection's address may try a login (bad-token logins are limited).
    fn login_allowed(&mut self, now: u32) -> bool;
    /// Records a LOGIN refused for a bad token against this connection's address.
    fn login_failed(&mut self, now: u32);
    /// Adds the connection to the user table as `user_id`'s; false when a
    /// later login of its device replaced it before it got there.
    fn add_to_table(&mut self, user_id: u64) -> bool;
}

/// The protocol's state of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The logged-in user, 0 before login.
    pub user_id: u64,
    /// Tick after which the connection is closed (see the loop's sweep).
    pub deadline: u32,
    /// Tick of the last session heartbeat sent upstream, modulo 2^16: only
    /// the time since it matters, and a connection silent for that long
    /// (109 minutes) is closed long before. Two bytes keep `Conn` small.
    pub touched: u16,
    /// The send bucket (see `send_rate`): tokens, and the tick of their last refill.
    send_refilled: u32,
    send_tokens: u16,
    /// Requests sent upstream and not yet answered.
    pub in_flight: u16,
    /// Life stage.
    pub state: State,
    /// Reading stopped because `in_flight` reached the cap.
    pub paused: bool,
}

/// Whether a connection may take another frame now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Yes.
    Continue,
    /// Too many requests in flight: stop reading until a reply comes back.
    Paused,
    /// The connection is closing.
    Stopped,
}

/// What the loop does after a frame.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Nothing (the connection is closing).
    Nothing,
    /// Answer a PING; with `refresh`, re-assert the session upstream too.
    Pong {
        request_id: u32,
        client_time_ms: i64,
        refresh: bool,
    },
    /// A send over a rate: a TOO_MANY_REQUESTS ack, and the connection stays.
    SendRefused {
        request_id: u32,
        client_msg_id: String,
        message: String,
    },
    /// Send `request` upstream (already counted in flight).
    Upstream { request_id: u32, request: Request },
    /// Answer with an ERROR; the session is closing.
    Refuse {
        request_id: u32,
        code: ErrorCode,
        message: Cow<'static, str>,
    },
    /// LOGOUT: the session is closing.
    Close,
}

/// What an upstream reply does besides delivering its frame.
#[derive(Debug, PartialEq)]
pub enum Then {
    /// Nothing more.
    Nothing,
    /// LOGIN succeeded upstream.
    LoggedIn { user_id: u64, device_id: DeviceId },
    /// LOGIN refused; `bad_token` counts against the address.
    LoginRefused { bad_token: bool },
}

/// What the loop does after a reply, once the reply's frame is queued.
#[derive(Debug, Default, PartialEq)]
pub struct AfterReply {
    /// The login took: the connection is `Active` as this device; file its new deadline.
    pub activated: Option<DeviceId>,
    /// A login that arrived too late to use: its session must be undone upstream.
    pub undo_login: Option<(u64, DeviceId)>,
    /// Kick the connection (the session is then closing).
    pub kick: Option<KickReason>,
    /// Reading was paused and may go on.
    pub resume: bool,
}

/// What a deadline that came due means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The deadline moved later: file it again for this tick.
    Later(u32),
    /// Kick the connection (the session is then closing).
    Kick(KickReason),
    /// A closing connection ran out of time to flush: close it now.
    Close,
}

impl Session {
    /// A fresh connection, which must log in by `now + login_deadline`.
    pub fn new(now: u32, rules: &Rules) -> Self {
        Self {
            user_id: 0,
            deadline: now.saturating_add(rules.login_deadline),
            touched: 0,
            send_refilled: 0,
            send_tokens: u16::MAX,
            in_flight: 0,
            state: State::AwaitingLogin,
            paused: false,
        }
    }

    /// Whether another frame may be taken now; marks the session paused when not.
    pub fn flow(&mut self, rules: &Rules) -> Flow {
        if self.state == State::Closing {
            Flow::Stopped
        } else if self.in_flight >= rules.max_in_flight {
            self.paused = true;
            Flow::Paused
        } else {
            Flow::Continue
        }
    }

    /// Starts closing: the loop writes what is queued and closes within the linger.
    pub fn close(&mut self, now: u32) {
        self.state = State::Closing;
        self.deadline = now.saturating_add(CLOSE_LINGER_TICKS);
    }

    /// A frame that failed to decode: refused, and the session closes.
    pub fn on_decode_error(&mut self, err: &DecodeError, now: u32) -> Action {
        self.refuse(
            err.request_id(),
            err.code(),
            Cow::Owned(err.to_string()),
            now,
        )
    }

    /// A frame from the client. The caller has checked [`flow`](Self::flow).
    pub fn on_frame(
        &mut self,
        frame: Frame,
        now: u32,
        rules: &Rules,
        env: &mut impl Env,
    ) -> Action {
        if self.state == State::Closing {
            return Action::Nothing;
        }
        let request_id = frame.header.request_id;
        let body_len = frame.body.len();
        let body = match frame.body() {
            Ok(body) => body,
            Err(err) => return self.refuse(request_id, err.code(), err.to_string().into(), now),
        };
        if client_body_len(&body).is_some_and(|len| len != body_len) {
            // Unknown fields are refused rather than ignored: a client cannot, for
            // instance, name a sender and have it silently dropped.
            return self.refuse(
                request_id,
                ErrorCode::BadBody,
                "unknown or non-canonical fields in the body".into(),
                now,
            );
        }
        if self.state == State::Active {
            self.deadline = now.saturating_add(rules.heartbeat_deadline);
        }
        let client_msg_id = match &body {
            Body::SendToUser(m) => Some(&m.client_msg_id),
            Body::SendToGroup(m) => Some(&m.client_msg_id),
            _ => None,
        };
        if let Some(client_msg_id) = client_msg_id
            && self.state == State::Active
            && let Some(message) = self.over_send_rate(now, rules, env)
        {
            return Action::SendRefused {
                request_id,
                client_msg_id: client_msg_id.clone(),
                message,
            };
        }
        let request = match (self.state, body) {
            (state, Body::Ping(ping)) => {
                let since = u32::from(tick16(now).wrapping_sub(self.touched));
                let refresh =
                    state == State::Active && since >= rules.session_refresh.min(u16::MAX.into());
                if refresh {
                    self.touched = tick16(now);
                }
                return Action::Pong {
                    request_id,
                    client_time_ms: ping.client_time_ms,
                    refresh,
                };
            }
            (State::AwaitingLogin, Body::Login(login)) => {
                if !env.login_allowed(now) {
                    return self.refuse(
                        request_id,
                        ErrorCode::TooManyRequests,
                        "too many logins with bad tokens from this address; retry later".into(),
                        now,
                    );
                }
                self.state = State::LoggingIn;
                Request::Call(Call::Login(login))
            }
            (State::Active, Body::SendToUser(m)) => Request::Send(outgoing::Message::ToUser(m)),
            (State::Active, Body::SendToGroup(m)) => Request::Send(outgoing::Message::ToGroup(m)),
            (State::Active, Body::SyncConversations(m)) => {
                Request::Call(Call::SyncConversations(m))
            }
            (State::Active, Body::Sync(m)) => Request::Call(Call::Sync(m)),
            (State::Active, Body::History(m)) => Request::Call(Call::History(m)),
            (State::Active, Body::Read(m)) => Request::Call(Call::Read(m)),
            (State::Active, Body::Logout(_)) => {
                self.close(now);
                return Action::Close;
            }
            (State::Active | State::LoggingIn, Body::Login(_)) => {
                return self.refuse(
                    request_id,
                    ErrorCode::AlreadyLoggedIn,
                    "this connection is already logged in".into(),
                    now,
                );
            }
            (
                State::AwaitingLogin | State::LoggingIn,
                Body::SendToUser(_)
                | Body::SendToGroup(_)
                | Body::SyncConversations(_)
                | Body::Sync(_)
                | Body::History(_)
                | Body::Read(_)
                | Body::Logout(_),
            ) => {
                return self.refuse(
                    request_id,
                    ErrorCode::NotLoggedIn,
                    "log in first".into(),
                    now,
                );
            }
            (_, other) => {
                let message = format!("{:?} is not a command a client sends", other.command());
                return self.refuse(request_id, ErrorCode::UnknownCommand, message.into(), now);
            }
        };
        self.in_flight += 1;
        Action::Upstream {
            request_id,
            request,
        }
    }

    /// An upstream reply to one of this connection's requests.
    pub fn on_reply(
        &mut self,
        then: Then,
        now: u32,
        rules: &Rules,
        env: &mut impl Env,
    ) -> AfterReply {
        self.in_flight = self.in_flight.saturating_sub(1);
        let mut after = AfterReply::default();
        match then {
            Then::Nothing => {}
            Then::LoggedIn { user_id, device_id } if self.state == State::LoggingIn => {
                if env.add_to_table(user_id) {
                    self.state = State::Active;
                    self.user_id = user_id;
                    self.deadline = now.saturating_add(rules.heartbeat_deadline);
                    self.touched = tick16(now);
                    after.activated = Some(device_id);
                } else {
                    // A later login of the device replaced this one before it
                    // got here; the session upstream is that login's now.
                    after.kick = Some(KickReason::DuplicateLogin);
                }
            }
            Then::LoggedIn { user_id, device_id } => after.undo_login = Some((user_id, device_id)),
            Then::LoginRefused { bad_token } => {
                if self.state == State::LoggingIn {
                    self.state = State::AwaitingLogin;
                }
                if bad_token {
                    env.login_failed(now);
                }
            }
        }
        after.resume = after.kick.is_none() && self.paused && self.in_flight < rules.max_in_flight;
        if after.resume {
            self.paused = false;
        }
        after
    }

    /// The session's deadline came due at `now`.
    pub fn on_deadline(&self, now: u32) -> Due {
        if self.deadline > now {
            return Due::Later(self.deadline);
        }
        match self.state {
            State::AwaitingLogin | State::LoggingIn => Due::Kick(KickReason::LoginTimeout),
            State::Active => Due::Kick(KickReason::HeartbeatTimeout),
            State::Closing => Due::Close,
        }
    }

    fn refuse(
        &mut self,
        request_id: u32,
        code: ErrorCode,
        message: Cow<'static, str>,
        now: u32,
    ) -> Action {
        self.close(now);
        Action::Refuse {
            request_id,
            code,
            message,
        }
    }

    /// Why a send is over a rate, if it is; takes a token from both buckets otherwise.
    fn over_send_rate(&mut self, now: u32, rules: &Rules, env: &mut impl Env) -> Option<String> {
        if !rules
            .send_rate
            .take(&mut self.send_tokens, &mut self.send_refilled, now)
        {
            Some(format!(
                "more than {} sends per second on this connection; retry later",
                rules.send_rate.per_second
            ))
        } else if !env.take_user_send(self.user_id, now) {
            Some(format!(
                "more than {} sends per second from this user; retry later",
                rules.user_send_rate.per_second
            ))
        } else {
            None
        }
    }
}

/// The low 16 bits of a tick (see `Session::touched`).
fn tick16(now: u32) -> u16 {
    (now & u32::from(u16::MAX)) as u16
}

/// The ack refusing a send over a rate.
pub fn send_refused(client_msg_id: String, message: String) -> pb::SendAck {
    pb::SendAck {
        client_msg_id,
        error: Some(pb::Error {
            code: ErrorCode::TooManyRequests as i32,
            message,
        }),
        ..pb::SendAck::default()
    }
}

/// The canonical encoded length of a body a client may send (None for others).
fn client_body_len(body: &Body) -> Option<usize> {
    Some(match body {
        Body::Login(m) => m.encoded_len(),
        Body::Ping(m) => m.encoded_len(),
        Body::SendToUser(m) => m.encoded_len(),
        Body::SendToGroup(m) => m.encoded_len(),
        Body::SyncConversations(m) => m.encoded_len(),
        Body::Sync(m) => m.encoded_len(),
        Body::History(m) => m.encoded_len(),
        Body::Read(m) => m.encoded_len(),
        Body::Logout(m) => m.encoded_len(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use fishchat_codec::{Command, FrameDecoder, encode_frame_to_bytes};

    use super::*;

    const MAX: u32 = 64 * 1024;

    fn rules() -> Rules {
        Rules {
            login_deadline: 100,
            heartbeat_deadline: 50,
            session_refresh: 20,
            max_in_flight: 2,
            send_rate: SendRate {
                per_second: 10,
                burst: 2,
            },
            user_send_rate: SendRate {
                per_second: 20,
                burst: 5,
            },
        }
    }

    /// The node, scripted: what it answers, and what it was told.
    #[derive(Default)]
    struct FakeEnv {
        user_over_rate: bool,
        login_blocked: bool,
        replaced: bool,
        failed_logins: u32,
        added: Vec<u64>,
    }

    impl Env for FakeEnv {
        fn take_user_send(&mut self, _user_id: u64, _now: u32) -> bool {
            !self.user_over_rate
        }
        fn login_allowed(&mut self, _now: u32) -> bool {
            !self.login_blocked
        }
        fn login_failed(&mut self, _now: u32) {
            self.failed_logins += 1;
        }
        fn add_to_table(&mut self, user_id: u64) -> bool {
            self.added.push(user_id);
            !self.replaced
        }
    }

    fn device(id: &str) -> DeviceId {
        crate::device_id::DeviceIds::default().intern(id)
    }

    fn frame(command: Command, request_id: u32, body: &impl Message) -> Frame {
        let bytes = encode_frame_to_bytes(command, request_id, body, MAX).expect("encodes");
        raw(&bytes)
    }

    fn raw(bytes: &[u8]) -> Frame {
        FrameDecoder::new(MAX)
            .decode(&mut BytesMut::from(bytes))
            .expect("decodes")
            .expect("whole")
    }

    fn login() -> Frame {
        let body = pb::LoginRequest {
            token: "t".into(),
            device_id: "phone".into(),
        };
        frame(Command::Login, 1, &body)
    }

    fn send(request_id: u32) -> Frame {
        let body = pb::SendToUser {
            client_msg_id: format!("c{request_id}"),
            to_user_id: 9,
            ..pb::SendToUser::default()
        };
        frame(Command::SendToUser, request_id, &body)
    }

    fn ping(request_id: u32) -> Frame {
        let body = pb::Ping { client_time_ms: 5 };
        frame(Command::Ping, request_id, &body)
    }

    fn in_state(state: State) -> Session {
        let mut session = Session::new(0, &rules());
        session.state = state;
        if state == State::Active {
            session.user_id = 7;
        }
        session
    }

    fn refused(action: &Action) -> Option<(u32, ErrorCode)> {
        match action {
            Action::Refuse {
                request_id, code, ..
            } => Some((*request_id, *code)),
            _ => None,
        }
    }

    #[test]
    fn frames_in_every_state() {
        use State::*;
        let logout = frame(Command::Logout, 4, &pb::Logout {});
        let push = frame(Command::Push, 6, &pb::Push::default());
        /// Refused under this request id with this code.
        type Refusal = Option<(u32, ErrorCode)>;
        // (state, frame, refusal, state after, requests in flight after)
        let table: Vec<(State, Frame, Refusal, State, u16)> = vec![
            (AwaitingLogin, login(), None, LoggingIn, 1),
            (
                AwaitingLogin,
                send(2),
                Some((2, ErrorCode::NotLoggedIn)),
                Closing,
                0,
            ),
            (
                AwaitingLogin,
                logout.clone(),
                Some((4, ErrorCode::NotLoggedIn)),
                Closing,
                0,
            ),
            (
                LoggingIn,
                login(),
                Some((1, ErrorCode::AlreadyLoggedIn)),
                Closing,
                0,
            ),
            (
                LoggingIn,
                send(2),
                Some((2, ErrorCode::NotLoggedIn)),
                Closing,
                0,
            ),
            (
                Active,
                login(),
                Some((1, ErrorCode::AlreadyLoggedIn)),
                Closing,
                0,
            ),
            (Active, send(2), None, Active, 1),
            (Active, logout.clone(), None, Closing, 0),
            (
                Active,
                push.clone(),
                Some((6, ErrorCode::UnknownCommand)),
                Closing,
                0,
            ),
            (
                AwaitingLogin,
                push,
                Some((6, ErrorCode::UnknownCommand)),
                Closing,
                0,
            ),
            (Closing, login(), None, Closing, 0),
            (Closing, send(2), None, Closing, 0),
            (Closing, logout, None, Closing, 0),
        ];
        for (state, input, refusal, after, in_flight) in table {
            let command = input.header.command;
            let mut session = in_state(state);
            let action = session.on_frame(input, 3, &rules(), &mut FakeEnv::default());
            let what = format!("{command:?} in {state:?}: {action:?}");
            assert_eq!(refused(&action), refusal, "{what}");
            assert_eq!(session.state, after, "{what}");
            assert_eq!(session.in_flight, in_flight, "{what}");
            if state == Closing {
                assert_eq!(action, Action::Nothing, "{what}");
            }
            if after == Closing && state != Closing {
                assert_eq!(session.deadline, 3 + CLOSE_LINGER_TICKS, "{what}");
            }
        }
    }

    #[test]
    fn a_login_goes_upstream_and_its_reply_decides() {
        let mut session = in_state(State::AwaitingLogin);
        let mut env = FakeEnv::default();
        let action = session.on_frame(login(), 1, &rules(), &mut env);
        assert!(matches!(
            action,
            Action::Upstream {
                request_id: 1,
                request: Request::Call(Call::Login(_))
            }
        ));
        let then = Then::LoggedIn {
            user_id: 7,
            device_id: device("phone"),
        };
        let after = session.on_reply(then, 4, &rules(), &mut env);
        assert_eq!(after.activated.as_deref(), Some("phone"));
        assert_eq!(env.added, [7]);
        assert_eq!((session.state, session.user_id), (State::Active, 7));
        assert_eq!(session.deadline, 4 + rules().heartbeat_deadline);
        assert_eq!((session.in_flight, session.touched), (0, 4));
    }

    #[test]
    fn a_login_replaced_before_it_lands_is_kicked() {
        let mut session = in_state(State::LoggingIn);
        session.in_flight = 1;
        let mut env = FakeEnv {
            replaced: true,
            ..FakeEnv::default()
        };
        let then = Then::LoggedIn {
            user_id: 7,
            device_id: device("phone"),
        };
        let after = session.on_reply(then, 4, &rules(), &mut env);
        assert_eq!(after.kick, Some(KickReason::DuplicateLogin));
        assert_eq!(after.activated, None);
        assert_eq!((session.state, session.user_id), (State::LoggingIn, 0));
    }

    #[test]
    fn a_login_that_lands_on_a_closing_connection_is_undone() {
        let mut session = in_state(State::Closing);
        session.in_flight = 1;
        let then = Then::LoggedIn {
            user_id: 7,
            device_id: device("phone"),
        };
        let after = session.on_reply(then, 4, &rules(), &mut FakeEnv::default());
        assert_eq!(after.undo_login, Some((7, device("phone"))));
        assert_eq!((session.state, session.user_id), (State::Closing, 0));
    }

    #[test]
    fn a_refused_login_may_be_tried_again_and_bad_tokens_count() {
        for bad_token in [false, true] {
            let mut session = in_state(State::LoggingIn);
            session.in_flight = 1;
            let mut env = FakeEnv::default();
            let then = Then::LoginRefused { bad_token };
            let after = session.on_reply(then, 4, &rules(), &mut env);
            assert_eq!(after, AfterReply::default());
            assert_eq!(session.state, State::AwaitingLogin);
            assert_eq!(env.failed_logins, u32::from(bad_token));
        }
    }

    #[test]
    fn an_address_over_its_bad_logins_is_refused() {
        let mut session = in_state(State::AwaitingLogin);
        let mut env = FakeEnv {
            login_blocked: true,
            ..FakeEnv::default()
        };
        let action = session.on_frame(login(), 1, &rules(), &mut env);
        assert_eq!(refused(&action), Some((1, ErrorCode::TooManyRequests)));
        assert_eq!(session.state, State::Closing);
    }

    #[test]
    fn sends_over_either_rate_get_a_refusing_ack_and_the_connection_stays() {
        let mut session = in_state(State::Active);
        let mut env = FakeEnv::default();
        for request_id in 1..=2 {
            let action = session.on_frame(send(request_id), 0, &rules(), &mut env);
            assert!(
                matches!(action, Action::Upstream { .. }),
                "within the burst"
            );
        }
        session.in_flight = 0;
        let action = session.on_frame(send(3), 0, &rules(), &mut env);
        let Action::SendRefused {
            request_id,
            client_msg_id,
            message,
        } = action
        else {
            panic!("not refused: {action:?}");
        };
        assert_eq!((request_id, client_msg_id.as_str()), (3, "c3"));
        assert!(message.contains("on this connection"), "{message}");

        let mut session = in_state(State::Active);
        env.user_over_rate = true;
        let action = session.on_frame(send(4), 0, &rules(), &mut env);
        assert!(
            matches!(&action, Action::SendRefused { message, .. } if message.contains("from this user")),
            "{action:?}"
        );
        assert_eq!((session.state, session.in_flight), (State::Active, 0));
    }

    #[test]
    fn pings_are_answered_in_any_open_state_and_refresh_the_session_now_and_then() {
        for state in [State::AwaitingLogin, State::LoggingIn] {
            let mut session = in_state(state);
            let action = session.on_frame(ping(3), 30, &rules(), &mut FakeEnv::default());
            assert!(matches!(action, Action::Pong { refresh: false, .. }));
            assert_eq!(session.deadline, rules().login_deadline, "no extension");
        }
        let mut session = in_state(State::Active);
        let action = session.on_frame(ping(3), 30, &rules(), &mut FakeEnv::default());
        assert_eq!(
            action,
            Action::Pong {
                request_id: 3,
                client_time_ms: 5,
                refresh: true
            }
        );
        assert_eq!((session.touched, session.deadline), (30, 80));
        let action = session.on_frame(ping(4), 31, &rules(), &mut FakeEnv::default());
        assert!(matches!(action, Action::Pong { refresh: false, .. }));
        // The refresh tick is kept modulo 2^16: across the wrap it still counts.
        let (before, after) = (65_530, 65_530 + rules().session_refresh);
        session.on_frame(ping(5), before, &rules(), &mut FakeEnv::default());
        let action = session.on_frame(ping(6), after - 1, &rules(), &mut FakeEnv::default());
        assert!(matches!(action, Action::Pong { refresh: false, .. }));
        let action = session.on_frame(ping(7), after, &rules(), &mut FakeEnv::default());
        assert!(matches!(action, Action::Pong { refresh: true, .. }));
    }

    #[test]
    fn bad_bodies_are_refused_with_their_request_id() {
        let mut unknown_field = login().body.to_vec();
        unknown_field.extend_from_slice(&[0x78, 0x01]); // field 15, varint 1
        let mut malformed = vec![0u8; 4];
        malformed.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 9, 0x0a, 0x05]);
        let len = u32::try_from(malformed.len() - 4).expect("small");
        malformed[..4].copy_from_slice(&len.to_be_bytes());
        let mut with_field = vec![0u8; 4];
        with_field.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 8]);
        with_field.extend_from_slice(&unknown_field);
        let len = u32::try_from(with_field.len() - 4).expect("small");
        with_field[..4].copy_from_slice(&len.to_be_bytes());
        for (bytes, request_id) in [(malformed, 9), (with_field, 8)] {
            let mut session = in_state(State::AwaitingLogin);
            let action = session.on_frame(raw(&bytes), 0, &rules(), &mut FakeEnv::default());
            assert_eq!(refused(&action), Some((request_id, ErrorCode::BadBody)));
        }
    }

    #[test]
    fn an_undefined_command_is_refused_under_its_request_id() {
        let bytes = [0, 0, 0, 8, 1, 0, 0x03, 0xe7, 0, 0, 0, 24];
        let err = FrameDecoder::new(MAX)
            .decode(&mut BytesMut::from(&bytes[..]))
            .expect_err("command 999 is not defined");
        let mut session = in_state(State::Active);
        let action = session.on_decode_error(&err, 0);
        assert_eq!(refused(&action), Some((24, ErrorCode::UnknownCommand)));
        assert_eq!(session.state, State::Closing);
    }

    #[test]
    fn reading_pauses_at_the_cap_and_a_reply_resumes_it() {
        let mut session = in_state(State::Active);
        let mut env = FakeEnv::default();
        for request_id in 1..=2 {
            assert_eq!(session.flow(&rules()), Flow::Continue);
            session.on_frame(send(request_id), 0, &rules(), &mut env);
        }
        assert_eq!(session.flow(&rules()), Flow::Paused);
        assert!(session.paused);
        let after = session.on_reply(Then::Nothing, 0, &rules(), &mut env);
        assert!(after.resume);
        assert!(!session.paused);
        assert_eq!(session.flow(&rules()), Flow::Continue);
        let after = session.on_reply(Then::Nothing, 0, &rules(), &mut env);
        assert!(!after.resume, "not paused");
        session.close(0);
        assert_eq!(session.flow(&rules()), Flow::Stopped);
    }

    #[test]
    fn deadlines() {
        use State::*;
        // (state, deadline, now, due)
        let table = [
            (AwaitingLogin, 10, 9, Due::Later(10)),
            (AwaitingLogin, 10, 10, Due::Kick(KickReason::LoginTimeout)),
            (LoggingIn, 10, 11, Due::Kick(KickReason::LoginTimeout)),
            (Active, 10, 10, Due::Kick(KickReason::HeartbeatTimeout)),
            (Active, 50, 10, Due::Later(50)),
            (Closing, 10, 10, Due::Close),
        ];
        for (state, deadline, now, due) in table {
            let mut session = in_state(state);
            session.deadline = deadline;
            assert_eq!(session.on_deadline(now), due, "{state:?} at {now}");
        }
    }
}
