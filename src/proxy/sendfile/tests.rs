//! The pure decisions of the `sendfile` path: which requests, which header, which bytes.

use pingora::http::{RequestHeader, ResponseHeader};

use super::{request_allows, response_for, split_last_page};

const MIB: u64 = 1 << 20;

fn get(headers: &[(&str, &str)]) -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/m/resolve/main/f.bin", None).unwrap();
    for (name, value) in headers {
        req.insert_header(name.to_string(), *value).unwrap();
    }
    req
}

/// The blob storage's stored header for a blob of `size` bytes.
fn stored(size: u64) -> ResponseHeader {
    let mut header = ResponseHeader::build(200, None).unwrap();
    header
        .insert_header("content-length", size.to_string())
        .unwrap();
    header.insert_header("accept-ranges", "bytes").unwrap();
    header.insert_header("etag", "\"abc\"").unwrap();
    header
        .insert_header("content-type", "application/octet-stream")
        .unwrap();
    header
}

fn value<'a>(header: &'a ResponseHeader, name: &str) -> Option<&'a str> {
    header.headers.get(name).and_then(|v| v.to_str().ok())
}

#[test]
fn only_plain_gets_without_conditions_are_sent_with_sendfile() {
    assert_eq!(request_allows(&get(&[])), Ok(()));
    assert_eq!(request_allows(&get(&[("range", "bytes=5-")])), Ok(()));
    let mut head = get(&[]);
    head.set_method(http::Method::HEAD);
    assert!(request_allows(&head).is_err(), "HEAD");
    for conditional in [
        "if-none-match",
        "if-modified-since",
        "if-range",
        "if-match",
        "if-unmodified-since",
    ] {
        assert!(
            request_allows(&get(&[(conditional, "\"abc\"")])).is_err(),
            "{conditional}"
        );
    }
    let mut h2 = get(&[]);
    h2.set_version(http::Version::HTTP_2);
    assert!(request_allows(&h2).is_err(), "HTTP/2");
}

#[test]
fn a_whole_file_is_a_200_with_its_length() {
    let (header, range) = response_for(stored(10 * MIB), 10 * MIB, &get(&[])).unwrap();
    assert_eq!(header.status, 200);
    assert_eq!(range, 0..10 * MIB);
    assert_eq!(value(&header, "content-length"), Some("10485760"));
    assert_eq!(value(&header, "accept-ranges"), Some("bytes"));
    assert_eq!(value(&header, "content-range"), None);
    assert_eq!(header.version, http::Version::HTTP_11);
}

#[test]
fn a_single_range_is_a_206_with_its_content_range() {
    let size = 10 * MIB;
    let cases = [
        ("bytes=0-0", 0..1),
        ("bytes=1048576-3145727", MIB..3 * MIB),
        ("bytes=-100", size - 100..size),
        ("bytes=9000000-", 9_000_000..size),
        ("bytes=5-99999999", 5..size),
    ];
    for (range_header, expected) in cases {
        let (header, range) =
            response_for(stored(size), size, &get(&[("range", range_header)])).unwrap();
        assert_eq!(header.status, 206, "{range_header}");
        assert_eq!(range, expected, "{range_header}");
        let length = (expected.end - expected.start).to_string();
        assert_eq!(value(&header, "content-length"), Some(length.as_str()));
        let content_range = format!("bytes {}-{}/{size}", expected.start, expected.end - 1);
        assert_eq!(
            value(&header, "content-range"),
            Some(content_range.as_str())
        );
        assert_eq!(value(&header, "accept-ranges"), None);
    }
}

#[test]
fn several_ranges_unsatisfiable_ones_and_empty_files_are_left_to_pingora() {
    let size = 10 * MIB;
    for range_header in ["bytes=0-1,5-6", "bytes=20000000-"] {
        assert!(
            response_for(stored(size), size, &get(&[("range", range_header)])).is_none(),
            "{range_header}"
        );
    }
    assert!(response_for(stored(0), 0, &get(&[])).is_none());
    // A range header Pingora ignores gives the whole file, as on the normal path.
    let (header, range) =
        response_for(stored(size), size, &get(&[("range", "pages=1-2")])).unwrap();
    assert_eq!((header.status.as_u16(), range), (200, 0..size));
}

#[test]
fn the_last_page_of_the_range_is_split_off_for_the_checked_read() {
    let page = MIB;
    assert_eq!(
        split_last_page(&(0..10 * MIB), page),
        Some((0..9 * MIB, 9 * MIB..10 * MIB))
    );
    // A short last page.
    assert_eq!(
        split_last_page(&(0..10 * MIB + 7), page),
        Some((0..10 * MIB, 10 * MIB..10 * MIB + 7))
    );
    // A range ending right after a page boundary keeps one byte for the checked read.
    assert_eq!(
        split_last_page(&(100..2 * MIB + 1), page),
        Some((100..2 * MIB, 2 * MIB..2 * MIB + 1))
    );
    // A range starting inside the last page's predecessor.
    assert_eq!(
        split_last_page(&(MIB - 1..2 * MIB), page),
        Some((MIB - 1..MIB, MIB..2 * MIB))
    );
    // Within one page: nothing for sendfile.
    assert_eq!(split_last_page(&(MIB..2 * MIB), page), None);
    assert_eq!(split_last_page(&(5..6), page), None);
    assert_eq!(split_last_page(&(5..5), page), None);
}
