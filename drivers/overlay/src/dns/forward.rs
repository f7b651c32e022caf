//! Names not ours go to the host's upstream resolvers, as the client sent them.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hickory_server::proto::op::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;
use tracing::debug;

use super::upstream::Upstreams;

/// The largest DNS message (over TCP; UDP answers are smaller).
const MAX_MESSAGE: usize = u16::MAX as usize;

pub struct Forwarder {
    upstreams: Upstreams,
    /// How long one upstream gets to answer before the next one is tried.
    timeout: Duration,
}

impl Forwarder {
    pub fn new(upstreams: Upstreams, timeout: Duration) -> Forwarder {
        Forwarder { upstreams, timeout }
    }

    /// The first answer of the upstreams, tried in order; None when there is none or none
    /// answered. Over UDP unless the query came over TCP or the UDP answer is truncated.
    pub async fn forward(&self, query: &[u8], over_tcp: bool) -> Option<Message> {
        let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
        for &server in self.upstreams.current().iter() {
            match self.ask(server, query, id, over_tcp).await {
                Ok(answer) => return Some(answer),
                Err(error) => debug!(%server, error = format!("{error:#}"), "upstream resolver did not answer"),
            }
        }
        None
    }

    async fn ask(&self, server: SocketAddr, query: &[u8], id: u16, over_tcp: bool) -> Result<Message> {
        if over_tcp {
            return parsed(&self.exchange_tcp(server, query).await?, id);
        }
        let answer = parsed(&self.exchange_udp(server, query, id).await?, id)?;
        if !answer.metadata.truncation {
            return Ok(answer);
        }
        match self.exchange_tcp(server, query).await.and_then(|bytes| parsed(&bytes, id)) {
            Ok(full) => Ok(full),
            Err(error) => {
                debug!(%server, error = format!("{error:#}"), "TCP retry of a truncated answer failed: relaying it truncated");
                Ok(answer)
            }
        }
    }

    async fn exchange_udp(&self, server: SocketAddr, query: &[u8], id: u16) -> Result<Vec<u8>> {
        let any: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(any).await.context("binding a UDP socket")?;
        socket.connect(server).await.context("connecting")?;
        socket.send(query).await.context("sending")?;
        let mut buffer = vec![0u8; MAX_MESSAGE];
        let received = timeout(self.timeout, async {
            loop {
                let len = socket.recv(&mut buffer).await?;
                // Anything else on this port is a stray datagram, not our answer.
                if len >= 2 && buffer[..2] == id.to_be_bytes() {
                    return Ok::<usize, std::io::Error>(len);
                }
            }
        })
        .await
        .context("timed out")?
        .context("receiving")?;
        buffer.truncate(received);
        Ok(buffer)
    }

    async fn exchange_tcp(&self, server: SocketAddr, query: &[u8]) -> Result<Vec<u8>> {
        let len = u16::try_from(query.len()).context("query too long for TCP")?;
        timeout(self.timeout, async {
            let mut stream = TcpStream::connect(server).await.context("connecting over TCP")?;
            let mut framed = Vec::with_capacity(query.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(query);
            stream.write_all(&framed).await.context("sending over TCP")?;
            let answer_len = stream.read_u16().await.context("receiving over TCP")?;
            let mut answer = vec![0u8; usize::from(answer_len)];
            stream.read_exact(&mut answer).await.context("receiving over TCP")?;
            Ok(answer)
        })
        .await
        .context("timed out over TCP")?
    }
}

fn parsed(bytes: &[u8], id: u16) -> Result<Message> {
    let message = Message::from_vec(bytes).context("malformed answer")?;
    if message.metadata.id != id || message.metadata.message_type != MessageType::Response {
        bail!("not an answer to the query");
    }
    Ok(message)
}
