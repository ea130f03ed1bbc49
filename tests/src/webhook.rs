//! A webhook receiver for the notification service: an HTTP/1.1 server on
//! 127.0.0.1:0 that answers every request 200 and records it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One recorded request.
#[derive(Debug, Clone)]
pub struct WebhookCall {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl WebhookCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Whether the body mentions `text` (e.g. an order id).
    pub fn mentions(&self, text: &str) -> bool {
        String::from_utf8_lossy(&self.body).contains(text)
    }
}

pub struct WebhookReceiver {
    addr: std::net::SocketAddr,
    calls: Arc<Mutex<Vec<WebhookCall>>>,
    task: JoinHandle<()>,
}

impl WebhookReceiver {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = calls.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, recorded).await;
                });
            }
        });
        Ok(Self { addr, calls, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}/notifications", self.addr)
    }

    /// Every request received so far.
    pub fn calls(&self) -> Vec<WebhookCall> {
        self.calls.lock().expect("webhook calls").clone()
    }

    /// The requests whose body mentions `order_id`.
    pub fn calls_for(&self, order_id: &str) -> Vec<WebhookCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.mentions(order_id))
            .collect()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one connection (keep-alive: several requests in a row).
async fn serve(stream: TcpStream, calls: Arc<Mutex<Vec<WebhookCall>>>) -> anyhow::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        let read =
            tokio::time::timeout(Duration::from_secs(60), reader.read_line(&mut request_line))
                .await
                .context("idle connection")??;
        if read == 0 {
            return Ok(());
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v): &(String, String)| v.clone())
        };
        let mut body = Vec::new();
        if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let mut size_line = String::new();
                reader.read_line(&mut size_line).await?;
                let size =
                    usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)?;
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk).await?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(length) = find("content-length") {
            let mut chunk = vec![0; length.parse()?];
            reader.read_exact(&mut chunk).await?;
            body = chunk;
        }
        let close = find("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        calls.lock().expect("webhook calls").push(WebhookCall {
            method,
            path,
            headers,
            body,
        });
        let response = if close {
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        } else {
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
        };
        reader.get_mut().write_all(response.as_bytes()).await?;
        reader.get_mut().flush().await?;
        if close {
            return Ok(());
        }
    }
}
