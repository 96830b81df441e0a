//! One Centrifugo client over WebSocket, in Centrifugo's JSON protocol: each
//! command is a JSON object with an `id`; the server answers with the same
//! `id`, pushes publications as `{"push":{"channel":..,"pub":{"data":..}}}`,
//! pings with `{}` (answered with `{}`), and may put several of these in one
//! frame, a line each.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::idle::wire::dial;
use crate::subscribers::{Event, Failure, Protocol};

/// Where Centrifugo serves WebSocket clients.
const WEBSOCKET_PATH: &str = "/connection/websocket";

/// Centrifugo subscribers: connect without a token (the bench server runs
/// with `client.insecure`), subscribe to the client's own channel `u-<i>`,
/// answer the server's pings.
#[derive(Debug, Clone)]
pub struct Centrifugo {
    /// The server's HTTP address.
    pub server: SocketAddr,
}

/// An open, subscribed connection.
#[derive(Debug)]
pub struct Conn {
    ws: WebSocketStream<TcpStream>,
    /// Events read in a frame that held several.
    pending: VecDeque<Event>,
}

impl Conn {
    async fn send(&mut self, text: String) -> Result<(), Failure> {
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| Failure(format!("write: {e}")))
    }

    /// The next JSON object the server sends.
    async fn read(&mut self) -> Result<Vec<Value>, Failure> {
        loop {
            let message = match self.ws.next().await {
                None => return Err(Failure("closed by the server".into())),
                Some(Err(e)) => return Err(Failure(format!("read: {e}"))),
                Some(Ok(message)) => message,
            };
            let text = match &message {
                Message::Text(text) => text.as_str(),
                Message::Binary(_) => return Err(Failure("a binary frame".into())),
                Message::Close(_) => return Err(Failure("closed by the server".into())),
                _ => continue,
            };
            return text
                .lines()
                .filter(|line| !line.trim().is_empty())
                .map(|line| {
                    serde_json::from_str(line).map_err(|e| Failure(format!("bad JSON: {e}")))
                })
                .collect();
        }
    }

    /// Sends command `id` and waits for its reply, which must hold `field`.
    async fn call(&mut self, id: u32, command: Value, field: &str) -> Result<(), Failure> {
        let mut body = serde_json::Map::new();
        body.insert("id".into(), id.into());
        body.insert(field.into(), command);
        self.send(Value::Object(body).to_string()).await?;
        loop {
            for reply in self.read().await? {
                if reply.get("id").and_then(Value::as_u64) != Some(u64::from(id)) {
                    continue;
                }
                if let Some(error) = reply.get("error") {
                    return Err(Failure(format!("{field} refused: {error}")));
                }
                if reply.get(field).is_some() {
                    return Ok(());
                }
                return Err(Failure(format!("{field}: unexpected reply {reply}")));
            }
        }
    }
}

/// What one object from the server means to a holding subscriber.
fn event(object: &Value) -> Event {
    if object.as_object().is_some_and(serde_json::Map::is_empty) {
        return Event::Pong;
    }
    match object.pointer("/push/pub/data") {
        Some(data) => Event::Delivery {
            sent_us: data.get("t").and_then(Value::as_u64),
        },
        None => Event::Other,
    }
}

impl Protocol for Centrifugo {
    type Conn = Conn;

    async fn setup(&self, index: usize, source: Option<IpAddr>) -> Result<Conn, Failure> {
        let stream = dial(self.server, source).await?;
        let url = format!("ws://{}{WEBSOCKET_PATH}", self.server);
        let (ws, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .map_err(|e| Failure(format!("websocket handshake: {e}")))?;
        let mut conn = Conn {
            ws,
            pending: VecDeque::new(),
        };
        conn.call(1, serde_json::json!({}), "connect").await?;
        conn.call(
            2,
            serde_json::json!({ "channel": channel(index) }),
            "subscribe",
        )
        .await?;
        Ok(conn)
    }

    fn ping_every(&self) -> Option<Duration> {
        None
    }

    async fn ping(&self, _conn: &mut Conn) -> Result<(), Failure> {
        Ok(())
    }

    async fn next(&self, conn: &mut Conn) -> Result<Event, Failure> {
        loop {
            if let Some(event) = conn.pending.pop_front() {
                return Ok(event);
            }
            for object in conn.read().await? {
                let event = event(&object);
                if matches!(event, Event::Pong) {
                    conn.send("{}".into()).await?;
                }
                conn.pending.push_back(event);
            }
        }
    }

    async fn close(&self, conn: &mut Conn) {
        let _ = conn.ws.close(None).await;
    }
}

/// Subscriber `index`'s channel.
pub fn channel(index: usize) -> String {
    format!("u-{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_read_as_events() {
        assert!(matches!(event(&serde_json::json!({})), Event::Pong));
        let publication = serde_json::json!({
            "push": { "channel": "u-1", "pub": { "data": { "t": 42 } } }
        });
        assert!(matches!(
            event(&publication),
            Event::Delivery { sent_us: Some(42) }
        ));
        let reply = serde_json::json!({ "id": 3, "subscribe": {} });
        assert!(matches!(event(&reply), Event::Other));
    }
}
