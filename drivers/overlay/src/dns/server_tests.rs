//! The server on loopback: 127.0.0.1 is a container of this host, 127.0.0.2 is not.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_server::proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::*;
use crate::dns::directory::{Asker, NamedEndpoint};

const ASKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);
/// More A records than fit in 512 bytes.
const MANY: u8 = 60;
const WAIT: Duration = Duration::from_secs(3);

fn directory() -> Directory {
    let directory = Directory::new();
    directory.set_endpoints(vec![NamedEndpoint {
        network: "vni-1".to_string(),
        endpoint: "e1".to_string(),
        names: vec!["web".to_string()],
        network_names: vec!["front".to_string()],
        ipv4: Some("10.0.1.2".parse().unwrap()),
        ipv6: Some("fd00::2".parse().unwrap()),
    }]);
    directory.set_askers(vec![Asker { addresses: vec![ASKER], networks: ["vni-1".to_string()].into() }]);
    directory
}

async fn start(upstreams: Vec<SocketAddr>, upstream_timeout: Duration) -> DnsServer {
    let config = DnsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        resolv_conf: "/nonexistent".into(),
        ttl: Duration::from_secs(1),
    };
    serve(config, directory(), move |_| Forwarder::new(Upstreams::fixed(upstreams), upstream_timeout)).await.unwrap()
}

/// A server forwarding to a stand-in upstream.
async fn with_upstream() -> (Upstream, DnsServer) {
    let upstream = Upstream::start().await;
    let server = start(vec![upstream.addr], WAIT).await;
    (upstream, server)
}

fn query(name: &str, kind: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    message
}

async fn ask_udp(server: SocketAddr, from: IpAddr, message: &Message) -> Message {
    let socket = UdpSocket::bind((from, 0)).await.unwrap();
    socket.send_to(&message.to_vec().unwrap(), server).await.unwrap();
    let mut buffer = vec![0u8; 65535];
    let (len, _) = timeout(WAIT, socket.recv_from(&mut buffer)).await.expect("no UDP answer").unwrap();
    let answer = Message::from_vec(&buffer[..len]).unwrap();
    assert_eq!(answer.metadata.id, message.metadata.id);
    assert_eq!(answer.metadata.message_type, MessageType::Response);
    answer
}

async fn ask_tcp(server: SocketAddr, from: IpAddr, message: &Message) -> Message {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    let mut stream = socket.connect(server).await.unwrap();
    let bytes = message.to_vec().unwrap();
    stream.write_all(&(bytes.len() as u16).to_be_bytes()).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let len = timeout(WAIT, stream.read_u16()).await.expect("no TCP answer").unwrap();
    let mut buffer = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buffer).await.unwrap();
    let answer = Message::from_vec(&buffer).unwrap();
    assert_eq!(answer.metadata.id, message.metadata.id);
    answer
}

fn addresses(answer: &Message) -> Vec<IpAddr> {
    answer
        .answers
        .iter()
        .map(|record| match &record.data {
            RData::A(A(v4)) => IpAddr::V4(*v4),
            RData::AAAA(AAAA(v6)) => IpAddr::V6(*v6),
            other => panic!("unexpected record {other:?}"),
        })
        .collect()
}

/// A stand-in upstream on one loopback port (UDP and TCP): `missing.example` is NXDOMAIN,
/// `big.example` is truncated over UDP, `many.example` has MANY addresses, every other name is UPSTREAM_ANSWER.
struct Upstream {
    addr: SocketAddr,
    udp_queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
    _tasks: JoinSet<()>,
}

impl Upstream {
    async fn start() -> Upstream {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).await.unwrap();
        let (udp_queries, tcp_queries) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut tasks = JoinSet::new();
        let counter = udp_queries.clone();
        tasks.spawn(async move {
            let mut buffer = vec![0u8; 65535];
            while let Ok((len, from)) = udp.recv_from(&mut buffer).await {
                counter.fetch_add(1, Ordering::SeqCst);
                let answer = Upstream::answer(&buffer[..len], false);
                udp.send_to(&answer, from).await.unwrap();
            }
        });
        let counter = tcp_queries.clone();
        tasks.spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let len = stream.read_u16().await.unwrap();
                let mut buffer = vec![0u8; usize::from(len)];
                stream.read_exact(&mut buffer).await.unwrap();
                let answer = Upstream::answer(&buffer, true);
                stream.write_all(&(answer.len() as u16).to_be_bytes()).await.unwrap();
                stream.write_all(&answer).await.unwrap();
            }
        });
        Upstream { addr, udp_queries, tcp_queries, _tasks: tasks }
    }

    fn answer(query: &[u8], over_tcp: bool) -> Vec<u8> {
        let query = Message::from_vec(query).unwrap();
        let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
        answer.metadata.recursion_available = true;
        answer.add_queries(query.queries.clone());
        let name = query.queries[0].name().clone();
        match name.to_ascii().as_str() {
            "missing.example." => answer.metadata.response_code = ResponseCode::NXDomain,
            "big.example." if !over_tcp => answer.metadata.truncation = true,
            "many.example." => {
                for last in 1..=MANY {
                    let address = Ipv4Addr::new(192, 0, 2, last);
                    answer.add_answer(Record::from_rdata(name.clone(), 300, RData::A(A(address))));
                }
            }
            _ => {
                answer.add_answer(Record::from_rdata(name, 300, RData::A(A(UPSTREAM_ANSWER))));
            }
        }
        answer.to_vec().unwrap()
    }

    fn queries(&self) -> usize {
        self.udp_queries.load(Ordering::SeqCst) + self.tcp_queries.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn names_of_the_directory_are_answered_over_udp_and_tcp() {
    let (upstream, server) = with_upstream().await;
    let at = server.local_addr;

    let answer = ask_udp(at, ASKER, &query("web.", RecordType::A)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative);
    assert_eq!(addresses(&answer), vec!["10.0.1.2".parse::<IpAddr>().unwrap()]);
    assert_eq!(answer.answers[0].ttl, 1);
    assert_eq!(answer.answers[0].name.to_ascii(), "web.");

    let answer = ask_tcp(at, ASKER, &query("WEB.front.", RecordType::AAAA)).await;
    assert_eq!(addresses(&answer), vec!["fd00::2".parse::<IpAddr>().unwrap()]);
    assert_eq!(answer.answers[0].name.to_ascii(), "WEB.front.");

    let answer = ask_udp(at, ASKER, &query("web.", RecordType::TXT)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.answers.is_empty());
    assert_eq!(upstream.queries(), 0, "names of ours are never forwarded");
}

#[tokio::test]
async fn a_source_that_is_no_container_of_this_host_is_refused_and_nothing_is_forwarded() {
    let (upstream, server) = with_upstream().await;
    let at = server.local_addr;
    assert_eq!(addresses(&ask_udp(at, ASKER, &query("web.", RecordType::A)).await).len(), 1);
    assert_eq!(addresses(&ask_udp(at, ASKER, &query("example.com.", RecordType::A)).await).len(), 1);
    assert_eq!(upstream.queries(), 1);

    for name in ["web.", "example.com."] {
        let answer = ask_udp(at, STRANGER, &query(name, RecordType::A)).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::Refused, "{name} over UDP");
        assert!(answer.answers.is_empty());
        let answer = ask_tcp(at, STRANGER, &query(name, RecordType::A)).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::Refused, "{name} over TCP");
    }
    assert_eq!(upstream.queries(), 1, "a refused query reached the upstream");
}

#[tokio::test]
async fn other_names_are_forwarded_over_the_protocol_they_came_with_and_the_rcode_is_relayed() {
    let (upstream, server) = with_upstream().await;
    let at = server.local_addr;

    let answer = ask_udp(at, ASKER, &query("example.com.", RecordType::A)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&answer), vec![IpAddr::V4(UPSTREAM_ANSWER)]);
    assert_eq!(answer.answers[0].ttl, 300);
    assert_eq!(upstream.udp_queries.load(Ordering::SeqCst), 1);

    let answer = ask_tcp(at, ASKER, &query("example.com.", RecordType::A)).await;
    assert_eq!(addresses(&answer), vec![IpAddr::V4(UPSTREAM_ANSWER)]);
    assert_eq!(upstream.tcp_queries.load(Ordering::SeqCst), 1);

    let answer = ask_udp(at, ASKER, &query("missing.example.", RecordType::A)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert!(answer.answers.is_empty());

    // A name of ours on a network the asker is not on is someone else's too.
    let answer = ask_udp(at, ASKER, &query("web.back.", RecordType::A)).await;
    assert_eq!(addresses(&answer), vec![IpAddr::V4(UPSTREAM_ANSWER)]);
}

#[tokio::test]
async fn a_truncated_udp_answer_is_asked_again_over_tcp() {
    let (upstream, server) = with_upstream().await;
    let answer = ask_udp(server.local_addr, ASKER, &query("big.example.", RecordType::A)).await;
    assert!(!answer.metadata.truncation);
    assert_eq!(addresses(&answer), vec![IpAddr::V4(UPSTREAM_ANSWER)]);
    assert_eq!(upstream.udp_queries.load(Ordering::SeqCst), 1);
    assert_eq!(upstream.tcp_queries.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_answer_larger_than_the_client_takes_over_udp_is_truncated_and_whole_over_tcp() {
    let (_upstream, server) = with_upstream().await;
    let at = server.local_addr;
    let answer = ask_tcp(at, ASKER, &query("many.example.", RecordType::A)).await;
    assert!(!answer.metadata.truncation);
    assert_eq!(addresses(&answer).len(), usize::from(MANY));

    let answer = ask_udp(at, ASKER, &query("many.example.", RecordType::A)).await;
    assert!(answer.metadata.truncation);
    assert!(addresses(&answer).len() < usize::from(MANY));

    let mut with_edns = query("many.example.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    with_edns.set_edns(edns);
    let answer = ask_udp(at, ASKER, &with_edns).await;
    assert!(!answer.metadata.truncation);
    assert_eq!(addresses(&answer).len(), usize::from(MANY));
    assert_eq!(answer.edns.map(|e| e.max_payload()), Some(4096));
}

#[tokio::test]
async fn without_an_upstream_other_names_get_servfail_at_once() {
    let server = start(vec![], WAIT).await;
    let at = server.local_addr;
    assert_eq!(addresses(&ask_udp(at, ASKER, &query("web.", RecordType::A)).await).len(), 1);
    let started = Instant::now();
    let answer = ask_udp(at, ASKER, &query("example.com.", RecordType::A)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    let answer = ask_tcp(at, ASKER, &query("example.com.", RecordType::A)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_millis(500), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_silent_upstream_is_given_up_for_the_next_and_servfail_when_all_are_silent() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let upstream = Upstream::start().await;
    let upstream_timeout = Duration::from_millis(300);
    let server = start(vec![silent.local_addr().unwrap(), upstream.addr], upstream_timeout).await;
    let started = Instant::now();
    let answer = ask_udp(server.local_addr, ASKER, &query("example.com.", RecordType::A)).await;
    assert_eq!(addresses(&answer), vec![IpAddr::V4(UPSTREAM_ANSWER)]);
    assert!(started.elapsed() >= upstream_timeout, "the silent upstream was not asked first");

    let server = start(vec![silent.local_addr().unwrap()], upstream_timeout).await;
    let started = Instant::now();
    let answer = ask_udp(server.local_addr, ASKER, &query("example.com.", RecordType::A)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() >= upstream_timeout);
}

#[tokio::test]
async fn malformed_packets_do_not_stop_the_server() {
    let server = start(vec![], WAIT).await;
    let at = server.local_addr;
    assert_eq!(addresses(&ask_udp(at, ASKER, &query("web.", RecordType::A)).await).len(), 1);

    let socket = UdpSocket::bind((ASKER, 0)).await.unwrap();
    let header_claiming_five_questions = [0x12, 0x34, 0x01, 0x00, 0x00, 0x05, 0, 0, 0, 0, 0, 0];
    let mut answer_instead_of_query = query("web.", RecordType::A);
    answer_instead_of_query.metadata.message_type = MessageType::Response;
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 5],
        header_claiming_five_questions.to_vec(),
        (0..=255u8).cycle().take(700).collect(),
        answer_instead_of_query.to_vec().unwrap(),
    ];
    for bytes in &garbage {
        socket.send_to(bytes, at).await.unwrap();
    }
    let mut stream = tokio::net::TcpStream::connect(at).await.unwrap();
    stream.write_all(&[0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00]).await.unwrap();

    assert_eq!(addresses(&ask_udp(at, ASKER, &query("web.", RecordType::A)).await).len(), 1);
    assert_eq!(addresses(&ask_tcp(at, ASKER, &query("web.", RecordType::A)).await).len(), 1);
}

#[tokio::test]
async fn an_address_in_use_is_an_error_and_dropping_the_server_frees_it() {
    let server = start(vec![], WAIT).await;
    let at = server.local_addr;
    assert_eq!(addresses(&ask_udp(at, ASKER, &query("web.", RecordType::A)).await).len(), 1);
    let config = DnsConfig { listen: at, resolv_conf: "/nonexistent".into(), ttl: Duration::from_secs(1) };
    let error = DnsServer::start(config.clone(), directory()).await.err().expect("bound an address in use");
    assert!(format!("{error:#}").contains(&at.to_string()), "{error:#}");

    drop(server);
    let deadline = Instant::now() + WAIT;
    let restarted = loop {
        match DnsServer::start(config.clone(), directory()).await {
            Ok(server) => break server,
            Err(error) if Instant::now() > deadline => panic!("address not freed: {error:#}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert_eq!(restarted.local_addr, at);
}
