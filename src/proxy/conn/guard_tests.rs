use std::time::{Duration, Instant};

use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

const LIMITS: StreamLimits = StreamLimits {
    header_timeout: Duration::from_millis(300),
    send_timeout: Duration::from_millis(300),
};

/// A guarded server end and the client end of an in-memory connection.
fn pair(capacity: usize) -> (GuardedStream, DuplexStream) {
    let (server, client) = duplex(capacity);
    (GuardedStream::new(Box::new(server), LIMITS), client)
}

/// Everything the client receives until the server side closes.
async fn client_reads_all(client: &mut DuplexStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_valid_head_and_its_body_pass_through_unchanged() {
    let (mut guarded, mut client) = pair(4096);
    let request =
        b"POST /api/models/o/n/paths-info/main HTTP/1.1\r\nHost: m\r\nContent-Length: 3\r\n\r\nabc";
    client.write_all(request).await.unwrap();
    let mut got = vec![0u8; request.len()];
    guarded.read_exact(&mut got).await.unwrap();
    assert_eq!(&got[..], &request[..]);
}

#[tokio::test]
async fn a_refused_head_is_answered_here_and_never_reaches_the_reader() {
    let (mut guarded, mut client) = pair(4096);
    client
        .write_all(
            b"GET / HTTP/1.1\r\nHost: m\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
    let server = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        let n = guarded.read(&mut buf).await.unwrap();
        (n, guarded)
    });
    let answer = client_reads_all(&mut client).await;
    drop(client);
    let (n, _guarded) = server.await.unwrap();
    assert_eq!(n, 0, "the refused bytes were passed on");
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Connection: close"), "{answer}");
}

#[tokio::test]
async fn a_head_that_does_not_finish_in_time_gets_408() {
    let (mut guarded, mut client) = pair(4096);
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: m\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let server = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        let mut total = 0;
        loop {
            let n = guarded.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return total;
            }
            total += n;
        }
    });
    let answer = client_reads_all(&mut client).await;
    drop(client);
    let passed = server.await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(started.elapsed() >= LIMITS.header_timeout);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        passed, 25,
        "the partial head is passed on before the deadline"
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_ended_without_an_answer() {
    let (mut guarded, mut client) = pair(4096);
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), guarded.read(&mut buf))
        .await
        .expect("the head deadline ends the read")
        .unwrap();
    assert_eq!(n, 0);
    drop(guarded);
    assert_eq!(client_reads_all(&mut client).await, "");
}

#[tokio::test]
async fn the_next_request_gets_a_fresh_check_and_deadline() {
    let (mut guarded, mut client) = pair(4096);
    let first = b"GET /a HTTP/1.1\r\nHost: m\r\n\r\n";
    client.write_all(first).await.unwrap();
    let mut buf = vec![0u8; first.len()];
    guarded.read_exact(&mut buf).await.unwrap();
    // Idle for longer than the head deadline: between requests it does not run.
    tokio::time::sleep(LIMITS.header_timeout * 2).await;
    guarded.start_next_request();
    client
        .write_all(b"GET /b HTTP/1.1\nHost: m\n\n")
        .await
        .unwrap();
    let n = guarded.read(&mut buf).await.unwrap();
    assert_eq!(n, 0, "a bare-LF second head must be refused");
    drop(guarded);
    let answer = client_reads_all(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[tokio::test]
async fn a_write_that_makes_no_progress_fails_after_the_send_timeout() {
    let (mut guarded, _client) = pair(1024);
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        guarded.write_all(&vec![7u8; 64 * 1024]),
    )
    .await
    .expect("the send timeout ends the write");
    let error = result.expect_err("nobody reads, the write must fail");
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    assert!(started.elapsed() >= LIMITS.send_timeout);
}

#[tokio::test]
async fn a_slow_reader_that_keeps_reading_is_not_cut() {
    let (mut guarded, mut client) = pair(1024);
    let reader = tokio::spawn(async move {
        let mut total = 0;
        let mut buf = vec![0u8; 512];
        while total < 16 * 1024 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            total += client.read(&mut buf).await.unwrap();
        }
        total
    });
    // 16 KiB at about 25 KiB/s takes well over the 300 ms send timeout in total.
    guarded.write_all(&vec![7u8; 16 * 1024]).await.unwrap();
    assert_eq!(reader.await.unwrap(), 16 * 1024);
}
