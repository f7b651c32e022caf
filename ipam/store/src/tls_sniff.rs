//! Whether a store endpoint we talk plain text to actually wants TLS: a TLS server drops a plain
//! request without a word, which looks like a network failure, so ask it in TLS instead.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A minimal TLS 1.2 ClientHello: any TLS server answers it with a handshake record (0x16) or an
/// alert (0x15); a plain-text server answers anything else or nothing.
const CLIENT_HELLO: [u8; 50] = [
    0x16, 0x03, 0x01, 0x00, 0x2d, // record: handshake, TLS 1.0 framing, 45 bytes
    0x01, 0x00, 0x00, 0x29, // ClientHello, 41 bytes
    0x03, 0x03, // TLS 1.2
    0x6e, 0x65, 0x74, 0x6c, 0x6f, 0x6f, 0x6d, 0x2d, 0x74, 0x6c, 0x73, 0x2d, 0x70, 0x72, 0x6f, 0x62, // random
    0x65, 0x2d, 0x6e, 0x6f, 0x74, 0x2d, 0x61, 0x2d, 0x73, 0x65, 0x73, 0x73, 0x69, 0x6f, 0x6e, 0x21, // (32 bytes)
    0x00, // no session id
    0x00, 0x02, 0xc0, 0x2f, // one cipher suite: ECDHE-RSA-AES128-GCM-SHA256
    0x01, 0x00, // null compression only
];

/// Whether `endpoint` (`host:port`) answers a ClientHello in TLS, within `timeout`.
pub async fn speaks_tls(endpoint: &str, timeout: Duration) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect(endpoint).await?;
        stream.write_all(&CLIENT_HELLO).await?;
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).await?;
        Ok::<bool, std::io::Error>(matches!(first[0], 0x15 | 0x16))
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Ok(true)))
}

pub async fn any_speaks_tls(endpoints: &[String], timeout: Duration) -> bool {
    for endpoint in endpoints {
        if speaks_tls(endpoint, timeout).await {
            return true;
        }
    }
    false
}

/// Whether any of `endpoints` accepts a TCP connection within `timeout`.
pub async fn any_accepts(endpoints: &[String], timeout: Duration) -> bool {
    for endpoint in endpoints {
        if matches!(tokio::time::timeout(timeout, TcpStream::connect(endpoint.as_str())).await, Ok(Ok(_))) {
            return true;
        }
    }
    false
}
