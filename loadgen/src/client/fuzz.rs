//! Fuzz targets for the load generator's parsers of what servers send (tests only;
//! docs/FUZZING.md): SSE, NDJSON and JSON envelopes, chunked coding, response heads and answers,
//! WebSocket frames, gateway frames and payload stamps. Each feeds random bytes, and inputs
//! built from the pieces the parser looks for, and asserts it answers without panicking.
//! `PROPTEST_CASES` sets how many inputs.

use std::time::Instant;

use bytes::Bytes;
use proptest::prelude::*;

use super::readbuf::ReadBuf;
use crate::envelope;
use crate::sse_parser::SseParser;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn input(pieces: &'static [&'static str], max: usize) -> impl Strategy<Value = Vec<u8>> {
    let built = prop::collection::vec(prop::sample::select(pieces), 0..max / 4 + 1)
        .prop_map(|v| v.concat().into_bytes());
    prop_oneof![bytes(max), built]
}

const SSE: &[&str] = &[
    "data:",
    "data: ",
    "id:",
    "id: 7",
    "event:",
    "event: gap",
    "retry:",
    "retry: 1000",
    ":",
    " keep-alive",
    "\n",
    "\r",
    "\r\n",
    "x",
    "{\"from\":1,\"to\":2}",
    "\u{feff}",
    "\0",
    "99999999999999999999",
];
const JSON: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"id\"",
    "\"data\"",
    "\"gap\"",
    "\"from\"",
    "\"to\"",
    "\"events\"",
    "\"last_id\"",
    "\"message_id\"",
    "\"ack\"",
    "\"epoch\"",
    "\"after\"",
    "\"reset\"",
    "\"0000beef\"",
    "\"BEEF\"",
    "1",
    "18446744073709551616",
    "-1",
    "\"x\"",
    "\"\\\"\"",
    "\"\\u00e9\"",
    "null",
    "true",
    "\n",
    " ",
];
const HTTP: &[&str] = &[
    "HTTP/1.1 ",
    "200 OK",
    "204",
    "304",
    "100",
    "\r\n",
    "Content-Length: ",
    "0",
    "5",
    "Content-Length: 18446744073709551616",
    "Transfer-Encoding: chunked",
    "Connection: close",
    "ETag: a",
    "Last-Modified: b",
    "\r\n\r\n",
    "5\r\nhello\r\n",
    "0\r\n\r\n",
    "ffffffffffffffffff\r\n",
    ";ext",
    "x",
];
const CHUNK_SIZE: &[&str] = &[
    "0",
    "1",
    "f",
    "F",
    "ffffffffffffffff",
    "10000000000000000",
    ";",
    "ext",
    " ",
    "\t",
    "x",
    "-",
];
const STAMP: &[&str] = &[
    "pb2 ",
    "1",
    " ",
    "18446744073709551615",
    "99999999999999999999",
    ".",
    "x",
    "-",
];

/// WebSocket frames: a header (FIN, opcode, mask bit, 7-bit, 16-bit or 64-bit length), then
/// random bytes that may or may not make up the payload.
fn ws_frames() -> impl Strategy<Value = Vec<u8>> {
    let header =
        (any::<u8>(), any::<bool>(), 0u8..128, any::<u64>()).prop_map(|(b0, masked, len7, ext)| {
            let mut h = vec![b0, len7 | if masked { 0x80 } else { 0 }];
            match len7 {
                126 => h.extend_from_slice(&(ext as u16).to_be_bytes()),
                127 => h.extend_from_slice(&ext.to_be_bytes()),
                _ => {}
            }
            h
        });
    prop::collection::vec((header, bytes(64)), 1..4).prop_map(|frames| {
        frames
            .into_iter()
            .flat_map(|(h, p)| h.into_iter().chain(p))
            .collect()
    })
}

proptest! {
    #[test]
    fn fuzz_sse_stream(body in input(SSE, 1024), split in 1usize..64) {
        let mut parser = SseParser::new();
        for chunk in body.chunks(split) {
            parser.feed(chunk);
            while parser.next_event().is_some() {}
        }
    }

    #[test]
    fn fuzz_envelopes(body in input(JSON, 512)) {
        let b = Bytes::from(body);
        let _ = envelope::parse_envelope(&b);
        let _ = envelope::parse_batch(&b);
        let _ = envelope::parse_gap(&b);
        let _ = envelope::parse_published(&b);
        let _ = envelope::parse_gateway_frame(&b);
        let _ = envelope::parse_nchan_last_message_id(&b);
    }

    #[test]
    fn fuzz_answers(buf in input(HTTP, 1024)) {
        if let Ok(Some((_, used))) = super::answer::parse(&buf, Instant::now()) {
            prop_assert!(used <= buf.len());
        }
        let _ = super::raw::parse_head(&String::from_utf8_lossy(&buf));
    }

    #[test]
    fn fuzz_chunk_size(line in input(CHUNK_SIZE, 64)) {
        let _ = super::chunked::parse_size(&line);
    }

    #[test]
    fn fuzz_ws_frames(wire in prop_oneof![ws_frames(), bytes(256)]) {
        let mut buf = ReadBuf::with_capacity(64);
        let room = buf.room(wire.len());
        room[..wire.len()].copy_from_slice(&wire);
        buf.filled(wire.len());
        for _ in 0..8 {
            match super::wsconn::take_frame(&mut buf) {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }

    #[test]
    fn fuzz_payload_stamp(payload in input(STAMP, 128)) {
        let _ = crate::load::payload::decode(&payload);
    }
}
