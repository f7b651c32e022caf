//! The DNS server: UDP and TCP on one address, answers from the directory, the rest forwarded.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Header, HeaderCounts, Message, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA};
use hickory_server::proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tracing::debug;

use super::directory::Directory;
use super::forward::Forwarder;
use super::lookup::{Lookup, QueryKind};
use super::upstream::Upstreams;

/// How long one upstream resolver gets before the next one is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 16;

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub listen: SocketAddr,
    /// Where the upstream resolvers are read from (re-read when it changes).
    pub resolv_conf: PathBuf,
    /// TTL of the answers from the directory.
    pub ttl: Duration,
}

/// A running server; dropping it stops it.
pub struct DnsServer {
    pub local_addr: SocketAddr,
    server: Server<Handler>,
}

impl DnsServer {
    /// Binds UDP and TCP on `config.listen` (an error when either cannot be bound) and serves
    /// in the background.
    pub async fn start(config: DnsConfig, directory: Directory) -> Result<DnsServer> {
        let resolv_conf = config.resolv_conf.clone();
        serve(config, directory, move |local_addr| {
            Forwarder::new(Upstreams::from_resolv_conf(resolv_conf, local_addr), UPSTREAM_TIMEOUT)
        })
        .await
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        // Dropping the server aborts its tasks; cancelling first lets them end cleanly.
        self.server.shutdown_token().cancel();
    }
}

/// Binds, then serves with the forwarder made for the bound address.
async fn serve(
    config: DnsConfig,
    directory: Directory,
    forwarder: impl FnOnce(SocketAddr) -> Forwarder,
) -> Result<DnsServer> {
    let udp = UdpSocket::bind(config.listen).await.with_context(|| format!("binding DNS to UDP {}", config.listen))?;
    // With port 0, TCP takes the port UDP was given.
    let local_addr = udp.local_addr().context("reading the DNS UDP address")?;
    let tcp = TcpListener::bind(local_addr).await.with_context(|| format!("binding DNS to TCP {local_addr}"))?;
    let handler = Handler {
        directory,
        forwarder: forwarder(local_addr),
        ttl: u32::try_from(config.ttl.as_secs()).unwrap_or(u32::MAX),
    };
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    Ok(DnsServer { local_addr, server })
}

struct Handler {
    directory: Directory,
    forwarder: Forwarder,
    ttl: u32,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, response: R) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        if request.metadata.op_code != OpCode::Query {
            return send(response, builder.error_msg(&request.metadata, ResponseCode::NotImp)).await;
        }
        let Ok(info) = request.request_info() else {
            return send(response, builder.error_msg(&request.metadata, ResponseCode::FormErr)).await;
        };
        let query = info.query;
        let kind = match query.query_type() {
            RecordType::A => QueryKind::A,
            RecordType::AAAA => QueryKind::Aaaa,
            _ => QueryKind::Other,
        };
        let source = request.src().ip();
        let lookup = match self.directory.lookup(source, &query.name().to_ascii(), kind) {
            Lookup::Found(_) if query.query_class() != DNSClass::IN => Lookup::NotOurs,
            lookup => lookup,
        };
        match lookup {
            Lookup::Refused => {
                debug!(%source, name = %query.name(), "query from no container of this host refused");
                send(response, builder.error_msg(&request.metadata, ResponseCode::Refused)).await
            }
            Lookup::Found(addresses) => {
                // As asked: some resolvers check the case they randomized.
                let name = query.original().name().clone();
                let records: Vec<Record> =
                    addresses.iter().map(|a| Record::from_rdata(name.clone(), self.ttl, rdata(*a))).collect();
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.authoritative = true;
                metadata.recursion_available = true;
                send(response, builder.build(metadata, records.iter(), [], [], [])).await
            }
            Lookup::NotOurs => {
                match self.forwarder.forward(request.as_slice(), request.protocol() == Protocol::Tcp).await {
                    Some(answer) => relay(request, answer, response).await,
                    None => {
                        let mut metadata = Metadata::response_from_request(&request.metadata);
                        metadata.response_code = ResponseCode::ServFail;
                        metadata.recursion_available = true;
                        send(response, builder.build_no_records(metadata)).await
                    }
                }
            }
        }
    }
}

fn rdata(address: IpAddr) -> RData {
    match address {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// The upstream's answer, rcode and records as it gave them, re-encoded for the client (UDP
/// answers larger than the client accepts are truncated, and the client retries over TCP).
async fn relay(request: &Request, answer: Message, response: impl ResponseHandler) -> ResponseInfo {
    let mut metadata = answer.metadata;
    metadata.id = request.metadata.id;
    // The client's size limit applies to what it gets, not the upstream's.
    let edns = request.edns.as_ref().map(|_| {
        let mut edns = answer.edns.unwrap_or_default();
        edns.set_max_payload(request.max_payload());
        edns
    });
    let mut builder = MessageResponseBuilder::from_message_request(request);
    if let Some(edns) = &edns {
        builder.edns(edns);
    }
    let message =
        builder.build(metadata, answer.answers.iter(), answer.authorities.iter(), [], answer.additionals.iter());
    send(response, message).await
}

async fn send<'a>(
    mut response: impl ResponseHandler,
    message: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    let metadata = *message.metadata();
    match response.send_response(message).await {
        Ok(info) => info,
        Err(error) => {
            debug!(%error, "sending a DNS answer failed");
            ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
        }
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
