//! The HTTP API on an ephemeral port, and a client that names each call by
//! its route (method and path template) and remembers every (route, status)
//! it saw, so a test can hold the documentation to what the server did.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fishchat_register::Registry;
use fishchat_register::http;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One observed answer: method, path template, status.
pub type Seen = (String, String, u16);

/// A running API and a client of it.
pub struct Api {
    base: String,
    http: Client,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
    seen: Mutex<BTreeSet<Seen>>,
    codes: Mutex<BTreeSet<String>>,
}

/// A reply: its status, its JSON body (`Null` when empty) and its
/// `Retry-After` seconds, if any.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub retry_after: Option<u64>,
}

impl Reply {
    /// Asserts the status and, for an error, that the body is `{"error", "code": code}`.
    #[track_caller]
    pub fn expect(&self, status: StatusCode, code: Option<&str>) -> &Value {
        assert_eq!(self.status, status, "{}", self.body);
        if let Some(code) = code {
            assert_eq!(self.body["code"], code, "{}", self.body);
            assert!(
                self.body["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{}",
                self.body
            );
        }
        &self.body
    }
}

/// A user logged in for a test.
#[derive(Debug, Clone)]
pub struct User {
    pub id: u64,
    pub token: String,
}

impl Api {
    /// Serves the API over `registry` on a free port.
    pub async fn start(registry: Arc<Registry>) -> Api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(http::serve(listener, registry, async {
            let _ = stopped.await;
        }));
        let http = Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Api {
            base,
            http,
            stop,
            server,
            seen: Mutex::default(),
            codes: Mutex::default(),
        }
    }

    /// Calls `route` ("POST /groups/{id}/join"), filling its `{...}`
    /// parameters from `params` in order.
    pub async fn call(
        &self,
        route: &str,
        params: &[&dyn ToString],
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let (method, template) = route.split_once(' ').expect("METHOD /path");
        let mut path = String::new();
        let mut rest = template;
        let mut params = params.iter();
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').expect("a closed parameter") + open;
            let value = params.next().expect("a value for every parameter");
            path.push_str(&rest[..open]);
            path.push_str(&value.to_string());
            rest = &rest[close + 1..];
        }
        path.push_str(rest);
        assert!(params.next().is_none(), "more values than parameters");

        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(route, request).await
    }

    /// Sends a raw body (say, broken JSON) to `route`, which has no parameters.
    pub async fn raw(&self, route: &str, token: Option<&str>, body: &'static str) -> Reply {
        let (method, path) = route.split_once(' ').expect("METHOD /path");
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        self.send(route, request).await
    }

    /// Sends `request` for `route` and remembers its status and code.
    async fn send(&self, route: &str, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("send");
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .map(|value| {
                let value = value.to_str().expect("Retry-After is text");
                value.parse().expect("Retry-After is whole seconds")
            });
        let text = response.text().await.expect("read body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|err| panic!("{status}: {text:?}: {err}"))
        };
        let (method, template) = route.split_once(' ').expect("METHOD /path");
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((method.to_owned(), template.to_owned(), status.as_u16()));
        if let Some(code) = body["code"].as_str() {
            self.codes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(code.to_owned());
        }
        Reply {
            status,
            body,
            retry_after,
        }
    }

    /// Creates and logs in `name` (password "pw").
    pub async fn user(&self, name: &str) -> User {
        let credentials = json!({"name": name, "password": "pw"});
        let created = self
            .call("POST /users", &[], None, Some(credentials.clone()))
            .await;
        let id = created.expect(StatusCode::CREATED, None)["user_id"]
            .as_u64()
            .expect("user_id");
        let login = self.call("POST /login", &[], None, Some(credentials)).await;
        let body = login.expect(StatusCode::OK, None);
        User {
            id,
            token: body["token"].as_str().expect("token").to_owned(),
        }
    }

    /// Creates a group owned by `owner`; returns its id.
    pub async fn group(&self, owner: &User, name: &str, open: bool) -> u64 {
        let reply = self
            .call(
                "POST /groups",
                &[],
                Some(&owner.token),
                Some(json!({"name": name, "open": open})),
            )
            .await;
        reply.expect(StatusCode::CREATED, None)["group_id"]
            .as_u64()
            .expect("group_id")
    }

    /// The members of `group` with their roles, as `caller` sees them.
    pub async fn members(&self, caller: &User, group: u64) -> Vec<(u64, String)> {
        let reply = self
            .call(
                "GET /groups/{id}/members",
                &[&group],
                Some(&caller.token),
                None,
            )
            .await;
        let body = reply.expect(StatusCode::OK, None);
        body["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| {
                (
                    m["user_id"].as_u64().expect("user_id"),
                    m["role"].as_str().expect("role").to_owned(),
                )
            })
            .collect()
    }

    /// Every (method, path template, status) seen so far.
    pub fn seen(&self) -> BTreeSet<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every error code seen so far.
    pub fn codes(&self) -> BTreeSet<String> {
        self.codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the server and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.expect("server task").expect("server");
    }
}
