use proptest::prelude::*;

use super::*;

/// Feeds `head` in one piece.
fn scan(head: &[u8]) -> Progress {
    HeadScanner::new().feed(head)
}

/// Feeds `head` split at `cuts` and returns the first final answer (indices made absolute).
fn scan_split(head: &[u8], cuts: &[usize]) -> Progress {
    let mut scanner = HeadScanner::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (head.len() + 1)).collect();
    points.push(head.len());
    points.sort_unstable();
    let mut start = 0;
    for end in points {
        match scanner.feed(&head[start..end]) {
            Progress::NeedMore => start = end,
            Progress::Complete(i) => return Progress::Complete(start + i),
            refused => return refused,
        }
    }
    Progress::NeedMore
}

fn status(head: &[u8]) -> Option<u16> {
    match scan(head) {
        Progress::Refused(r) => Some(r.status),
        _ => None,
    }
}

const GET: &[u8] = b"GET /org/name/resolve/main/config.json HTTP/1.1\r\nHost: m\r\n\r\n";

#[test]
fn a_normal_head_completes_where_it_ends() {
    assert_eq!(scan(GET), Progress::Complete(GET.len()));
    let mut with_body = GET.to_vec();
    with_body.extend_from_slice(b"trailing bytes are not examined \n\r\0");
    assert_eq!(scan(&with_body), Progress::Complete(GET.len()));
    assert_eq!(scan(&GET[..GET.len() - 1]), Progress::NeedMore);
}

#[test]
fn real_client_heads_are_accepted() {
    for head in [
        &b"HEAD /gpt2/resolve/main/config.json HTTP/1.1\r\nHost: 127.0.0.1:8090\r\nUser-Agent: unknown/None; hf_hub/2.4.0; python/3.11\r\nAccept-Encoding: identity\r\nAccept: */*\r\nConnection: keep-alive\r\nAuthorization: Bearer hf_x\r\nX-Amzn-Trace-Id: 5e1c\r\n\r\n"[..],
        b"POST /api/models/o/n/paths-info/main HTTP/1.1\r\nHost: m\r\nContent-Length: 27\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n",
        b"POST /api/models/o/n/paths-info/main HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: m\r\nX-Empty:\r\nX-Tab:\tv\t\r\nX-Utf8: \xc3\xa9\r\n\r\n",
        b"GET http://m/a HTTP/1.1\r\nHost: m\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: m\r\n\r\n",
    ] {
        assert!(
            matches!(scan(head), Progress::Complete(n) if n == head.len()),
            "{:?}: {:?}",
            String::from_utf8_lossy(head),
            scan(head)
        );
    }
}

#[test]
fn smuggling_framings_are_refused() {
    for head in [
        &b"POST /x HTTP/1.1\r\nHost: m\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"POST /x HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: m\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: m\r\nContent-Length: 5, 5\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: m\r\nContent-Length: +5\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: m\r\nContent-Length: -1\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: m\r\nContent-Length: 0x10\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: m\r\nContent-Length:\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: m\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: m\r\nTransfer-Encoding : chunked\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: m\r\n folded: value\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: m\r\nX: a\r\n\tfolded\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: m\r\nX: a\0b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: m\r\nX: a\x1bb\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: m\r\nX\0: v\r\n\r\n",
        b"GET /x HTTP/1.1\nHost: m\n\n",
        b"GET /x HTTP/1.1\r\nHost: m\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: m\r\rX: y\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nNoColon\r\n\r\n",
        b"GET /x HTTP/1.1\r\n: empty-name\r\n\r\n",
        b"GET /x HTTP/1.1\r\n\r\n",
    ] {
        assert_eq!(
            status(head),
            Some(400),
            "{:?}: {:?}",
            String::from_utf8_lossy(head),
            scan(head)
        );
    }
}

#[test]
fn garbage_request_lines_are_refused() {
    for line in [
        &b"GET /a b HTTP/1.1"[..],
        b"GET  /a HTTP/1.1",
        b"GET /a  HTTP/1.1",
        b"GET /a HTTP/1.1 ",
        b" GET /a HTTP/1.1",
        b"GET /a",
        b"GET",
        b"GET /a\x01b HTTP/1.1",
        b"GET /a\xc3\xa9 HTTP/1.1",
        b"G(T /a HTTP/1.1",
        b"GET a HTTP/1.1",
        b"GET /a HTTP/1.x",
        b"GET /a HTTPS/1.1",
        b"GET /a http/1.1",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"PRI * HTTP/2.0",
    ] {
        let mut head = line.to_vec();
        head.extend_from_slice(b"\r\nHost: m\r\n\r\n");
        let got = status(&head);
        assert!(
            matches!(got, Some(400 | 505)),
            "{:?}: {:?}",
            String::from_utf8_lossy(line),
            scan(&head)
        );
    }
    assert_eq!(status(b"GET / HTTP/2.0\r\nHost: m\r\n\r\n"), Some(505));
}

#[test]
fn size_limits_give_414_and_431() {
    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: m\r\n\r\n",
        "a".repeat(MAX_REQUEST_LINE)
    );
    assert_eq!(status(long_uri.as_bytes()), Some(414));
    // Refused as soon as the line is too long, without waiting for its end.
    assert_eq!(
        status(format!("GET /{}", "a".repeat(MAX_REQUEST_LINE)).as_bytes()),
        Some(414)
    );
    let fits = format!(
        "GET /{} HTTP/1.1\r\nHost: m\r\n\r\n",
        "a".repeat(MAX_REQUEST_LINE - 14)
    );
    assert!(matches!(scan(fits.as_bytes()), Progress::Complete(_)));

    let long_header = format!(
        "GET / HTTP/1.1\r\nHost: m\r\nX: {}\r\n\r\n",
        "v".repeat(MAX_HEADER_LINE)
    );
    assert_eq!(status(long_header.as_bytes()), Some(431));
    let many_lines = format!(
        "GET / HTTP/1.1\r\nHost: m\r\n{}\r\n",
        format!("X-Pad: {}\r\n", "v".repeat(4000)).repeat(20)
    );
    assert_eq!(status(many_lines.as_bytes()), Some(431));
    let too_many = format!(
        "GET / HTTP/1.1\r\nHost: m\r\n{}\r\n",
        "X: 1\r\n".repeat(100)
    );
    assert_eq!(status(too_many.as_bytes()), Some(431));
    let hundred = format!("GET / HTTP/1.1\r\n{}Host: m\r\n\r\n", "X: 1\r\n".repeat(99));
    assert!(matches!(scan(hundred.as_bytes()), Progress::Complete(_)));
}

fn valid_head() -> impl Strategy<Value = Vec<u8>> {
    let header = ("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,40}")
        .prop_map(|(n, v)| format!("{n}: {}\r\n", v.trim()));
    (
        "GET|HEAD|POST",
        "(/[a-zA-Z0-9%._~-]{0,12}){1,6}",
        prop::collection::vec(header, 0..12),
    )
        .prop_map(|(method, path, headers)| {
            let headers: String = headers
                .into_iter()
                .filter(|h| {
                    let name = h.split(':').next().unwrap_or("").to_ascii_lowercase();
                    !matches!(
                        name.as_str(),
                        "host" | "content-length" | "transfer-encoding"
                    )
                })
                .collect();
            format!("{method} {path} HTTP/1.1\r\nHost: m\r\n{headers}\r\n").into_bytes()
        })
}

proptest! {
    #[test]
    fn random_bytes_never_panic_and_complete_inside_the_chunk(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        if let Progress::Complete(i) = scan(&bytes) {
            prop_assert!(i <= bytes.len());
        }
    }

    #[test]
    fn valid_heads_complete_whatever_the_chunking(
        head in valid_head(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        prop_assert_eq!(scan(&head), Progress::Complete(head.len()));
        prop_assert_eq!(scan_split(&head, &cuts), Progress::Complete(head.len()));
    }

    #[test]
    fn mutated_heads_get_the_same_answer_whatever_the_chunking(
        head in valid_head(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut head = head;
        for (at, byte) in edits {
            let at = at % head.len();
            head[at] = byte;
        }
        let whole = scan(&head);
        prop_assert_eq!(scan_split(&head, &cuts), whole.clone());
        if let Progress::Refused(r) = whole {
            prop_assert!(matches!(r.status, 400 | 414 | 431 | 505), "{}", r);
        }
    }
}
