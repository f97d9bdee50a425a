//! Local receivers for the alert tests, all on 127.0.0.1: an HTTP receiver
//! (webhook, ntfy, Slack, Telegram, Uptime Kuma) that records every request
//! and answers as told, and a tiny SMTP sink.

#![allow(dead_code)] // each test binary uses its own part of this

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 `{"ok":true,"result":{}}` (good for every HTTP channel and Kuma).
    Ok,
    /// 500 for everything.
    Error,
    /// 404 `{"ok":false,"msg":"Monitor not found or not active."}` (Kuma).
    NotFound,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub async fn start(answer: Answer) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let recorded = recorded.clone();
            async move {
                recorded.lock().unwrap().push(Received {
                    method,
                    path: uri.path().to_string(),
                    query: uri.query().unwrap_or_default().to_string(),
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                match answer {
                    Answer::Ok => (StatusCode::OK, r#"{"ok":true,"result":{}}"#).into_response(),
                    Answer::Error => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
                    Answer::NotFound => (
                        StatusCode::NOT_FOUND,
                        r#"{"ok":false,"msg":"Monitor not found or not active."}"#,
                    )
                        .into_response(),
                }
            }
        };
        let router = axum::Router::new().fallback(handler);
        tokio::spawn(async move { axum::serve(listener, router).await });
        Receiver { addr, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests to `path`.
    pub fn at(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

/// A server that accepts connections and never answers; counts them.
pub struct Hanging {
    pub addr: SocketAddr,
    pub connections: Arc<Mutex<usize>>,
}

impl Hanging {
    pub async fn start() -> Hanging {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(Mutex::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                *counted.lock().unwrap() += 1;
                held.push(stream);
            }
        });
        Hanging { addr, connections }
    }
}

/// A port nothing listens on (bound, then released).
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// One mail the sink accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

/// A minimal SMTP server: EHLO, MAIL, RCPT, DATA, QUIT; no TLS, no auth.
#[derive(Clone)]
pub struct SmtpSink {
    pub addr: SocketAddr,
    pub mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let stored = mails.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let stored = stored.clone();
                tokio::spawn(async move {
                    let _ = session(stream, stored).await;
                });
            }
        });
        SmtpSink { addr, mails }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

async fn session(
    stream: tokio::net::TcpStream,
    mails: Arc<Mutex<Vec<Mail>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 sink.test ESMTP\r\n").await?;
    let mut from = String::new();
    let mut to = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            write
                .write_all(b"250-sink.test\r\n250 8BITMIME\r\n")
                .await?;
        } else if upper.starts_with("MAIL FROM:") {
            from = line[10..].trim().to_string();
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(line[8..].trim().to_string());
            write.write_all(b"250 OK\r\n").await?;
        } else if upper == "DATA" {
            write.write_all(b"354 go on\r\n").await?;
            let mut data = String::new();
            while let Some(line) = lines.next_line().await? {
                if line == "." {
                    break;
                }
                data.push_str(&line);
                data.push('\n');
            }
            mails.lock().unwrap().push(Mail {
                from: std::mem::take(&mut from),
                to: std::mem::take(&mut to),
                data,
            });
            write.write_all(b"250 queued\r\n").await?;
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            write.write_all(b"250 OK\r\n").await?;
        } else {
            write.write_all(b"502 not implemented\r\n").await?;
        }
    }
    Ok(())
}

/// Polls `condition` every 20 ms, panicking after 20 s naming `what`.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
