//! dlock's metrics in Prometheus text format, served at `http://127.0.0.1:9898/metrics`.
//!
//! ```text
//! cargo run --example metrics --features metrics               # the in-memory backend
//! DLOCK_URL=redis://127.0.0.1:6379 cargo run --example metrics --features metrics,redis
//! curl -s http://127.0.0.1:9898/metrics | grep dlock_
//! ```
//!
//! The recorder is `metrics-exporter-prometheus` (the metrics project's own exporter), without
//! its HTTP server: this program answers the scrape itself with a few lines of tokio, so the
//! example pulls no web framework. In a service that already has one (axum, actix), return
//! `handle.render()` from a route instead. `--once` prints one scrape and exits.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    let url = std::env::var("DLOCK_URL").unwrap_or_else(|_| "memory://".to_owned());
    let locker = dlock::Locker::connect(&url).await?;

    // Some traffic: two workers contend for one key, now and then busy.
    for worker in 0..2 {
        let locker = locker.clone();
        tokio::spawn(async move {
            loop {
                let request = locker.lock("report:daily").wait(Duration::from_millis(20));
                if let Ok(guard) = request.await {
                    tokio::time::sleep(Duration::from_millis(10 + worker * 5)).await;
                    let _ = guard.release().await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }

    if std::env::args().any(|a| a == "--once") {
        tokio::time::sleep(Duration::from_millis(500)).await;
        print!("{}", handle.render());
        return Ok(());
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:9898").await?;
    println!("serving dlock metrics at http://127.0.0.1:9898/metrics (Ctrl-C to stop)");
    loop {
        let (mut socket, _) = listener.accept().await?;
        let handle = handle.clone();
        tokio::spawn(async move {
            // One request per connection; whatever was asked, the answer is the scrape.
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            let body = handle.render();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}
