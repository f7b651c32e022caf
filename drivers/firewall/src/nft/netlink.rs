//! The NETLINK_NETFILTER socket, the nf_tables messages `nftnl` has no wrapper for (sets with
//! data, set elements with data and comments, chains with comments, chain flushes), and dumps.
//!
//! `nftnl` builds tables, rules and batches; for the rest we fill libnftnl objects through
//! `nftnl_sys` and implement `nftnl::NlMsg` for them, so that everything goes into one
//! `nftnl::Batch` (one atomic transaction).

use std::ffi::{c_void, CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use nftnl::nftnl_sys::{self as sys, libc};
use nftnl::{FinalizedBatch, MsgType, NlMsg};
use nix::errno::Errno;

use super::layout::{SetData, SetSpec, IFNAME_TYPE, TABLE};

pub(crate) const FAMILY: u16 = libc::NFPROTO_INET as u16;

fn alloc<T>(p: *mut T) -> NonNull<T> {
    NonNull::new(p).unwrap_or_else(|| std::process::abort())
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in nftables names")
}

/// A comment in libnftnl's user-data TLV format (type 0 = comment, NUL-terminated).
fn comment_udata(comment: &str) -> Vec<u8> {
    let bytes = comment.as_bytes();
    let len = bytes.len().min(126);
    let mut v = vec![0u8, (len + 1) as u8];
    v.extend(&bytes[..len]);
    v.push(0);
    v
}

/// The comment in user data, if any.
pub(crate) fn parse_comment_udata(mut data: &[u8]) -> Option<String> {
    while data.len() >= 2 {
        let (ty, len) = (data[0], data[1] as usize);
        let value = data.get(2..2 + len)?;
        if ty == 0 {
            let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
            return Some(String::from_utf8_lossy(&value[..end]).into_owned());
        }
        data = &data[2 + len..];
    }
    None
}

unsafe fn build_hdr(buf: *mut c_void, ty: i32, flags: i32, seq: u32) -> *mut libc::nlmsghdr {
    unsafe { sys::nftnl_nlmsg_build_hdr(buf.cast(), ty as u16, FAMILY, flags as u16, seq) }
}

/// The header of a message creating (`new`) or deleting (`del`) one object, by `msg_type`.
unsafe fn object_hdr(buf: *mut c_void, seq: u32, msg_type: MsgType, new: i32, del: i32) -> *mut libc::nlmsghdr {
    let (ty, flags) = match msg_type {
        MsgType::Add => (new, libc::NLM_F_CREATE | libc::NLM_F_ACK),
        MsgType::Del => (del, libc::NLM_F_ACK),
    };
    unsafe { build_hdr(buf, ty, flags, seq) }
}

/// A chain of `inet netloom`, base or regular, optionally with a comment.
pub(crate) struct ChainMsg(NonNull<sys::nftnl_chain>);

impl ChainMsg {
    pub fn new(name: &str) -> Self {
        let c = alloc(unsafe { sys::nftnl_chain_alloc() });
        let (table, name) = (cstr(TABLE), cstr(name));
        unsafe {
            sys::nftnl_chain_set_u32(c.as_ptr(), sys::NFTNL_CHAIN_FAMILY as u16, FAMILY.into());
            sys::nftnl_chain_set_str(c.as_ptr(), sys::NFTNL_CHAIN_TABLE as u16, table.as_ptr());
            sys::nftnl_chain_set_str(c.as_ptr(), sys::NFTNL_CHAIN_NAME as u16, name.as_ptr());
        }
        Self(c)
    }

    pub fn base(self, hook: nftnl::Hook, priority: i32, nat: bool) -> Self {
        let ty: &CStr = if nat { c"nat" } else { c"filter" };
        unsafe {
            let c = self.0.as_ptr();
            sys::nftnl_chain_set_u32(c, sys::NFTNL_CHAIN_HOOKNUM as u16, hook as u32);
            sys::nftnl_chain_set_s32(c, sys::NFTNL_CHAIN_PRIO as u16, priority);
            sys::nftnl_chain_set_str(c, sys::NFTNL_CHAIN_TYPE as u16, ty.as_ptr());
            sys::nftnl_chain_set_u32(c, sys::NFTNL_CHAIN_POLICY as u16, libc::NF_ACCEPT as u32);
        }
        self
    }

    pub fn comment(self, comment: &str) -> Self {
        let data = comment_udata(comment);
        unsafe {
            sys::nftnl_chain_set_data(
                self.0.as_ptr(),
                sys::NFTNL_CHAIN_USERDATA as u16,
                data.as_ptr().cast(),
                data.len() as u32,
            );
        }
        self
    }
}

impl Drop for ChainMsg {
    fn drop(&mut self) {
        unsafe { sys::nftnl_chain_free(self.0.as_ptr()) }
    }
}

unsafe impl NlMsg for ChainMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        unsafe {
            let h = object_hdr(buf, seq, msg_type, libc::NFT_MSG_NEWCHAIN, libc::NFT_MSG_DELCHAIN);
            sys::nftnl_chain_nlmsg_build_payload(h, self.0.as_ptr());
        }
    }
}

/// Deletes every rule of a chain (a DELRULE naming only the chain). Use with `MsgType::Del`.
pub(crate) struct FlushChain(NonNull<sys::nftnl_rule>);

impl FlushChain {
    pub fn new(chain: &str) -> Self {
        let r = alloc(unsafe { sys::nftnl_rule_alloc() });
        let (table, chain) = (cstr(TABLE), cstr(chain));
        unsafe {
            sys::nftnl_rule_set_u32(r.as_ptr(), sys::NFTNL_RULE_FAMILY as u16, FAMILY.into());
            sys::nftnl_rule_set_str(r.as_ptr(), sys::NFTNL_RULE_TABLE as u16, table.as_ptr());
            sys::nftnl_rule_set_str(r.as_ptr(), sys::NFTNL_RULE_CHAIN as u16, chain.as_ptr());
        }
        Self(r)
    }
}

impl Drop for FlushChain {
    fn drop(&mut self) {
        unsafe { sys::nftnl_rule_free(self.0.as_ptr()) }
    }
}

unsafe impl NlMsg for FlushChain {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _msg_type: MsgType) {
        unsafe {
            let h = build_hdr(buf, libc::NFT_MSG_DELRULE, libc::NLM_F_ACK, seq);
            sys::nftnl_rule_nlmsg_build_payload(h, self.0.as_ptr());
        }
    }
}

/// A named set or map of `inet netloom`, possibly carrying elements.
pub(crate) struct SetMsg(NonNull<sys::nftnl_set>);

/// What an element maps to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ElemData<'a> {
    None,
    Jump(&'a str),
    Value(&'a [u8]),
}

/// An element to add or delete (deletions need only the key).
pub(crate) struct NewElem<'a> {
    pub key: Vec<u8>,
    pub data: ElemData<'a>,
    pub comment: Option<String>,
}

impl NewElem<'_> {
    pub fn key(key: Vec<u8>) -> Self {
        Self { key, data: ElemData::None, comment: None }
    }
}

impl SetMsg {
    /// The set as a reference (for element messages and dumps).
    pub fn named(name: &str) -> Self {
        let s = alloc(unsafe { sys::nftnl_set_alloc() });
        let (table, name) = (cstr(TABLE), cstr(name));
        unsafe {
            sys::nftnl_set_set_u32(s.as_ptr(), sys::NFTNL_SET_FAMILY as u16, FAMILY.into());
            sys::nftnl_set_set_str(s.as_ptr(), sys::NFTNL_SET_TABLE as u16, table.as_ptr());
            sys::nftnl_set_set_str(s.as_ptr(), sys::NFTNL_SET_NAME as u16, name.as_ptr());
        }
        Self(s)
    }

    /// The full definition, to create the set.
    pub fn define(spec: &SetSpec) -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let set = Self::named(spec.name);
        let s = set.0.as_ptr();
        unsafe {
            // The kernel wants a transaction-local id with every new set.
            let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_ID as u16, id);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_TYPE as u16, spec.key_type);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_LEN as u16, spec.key_len);
            if spec.key_type == IFNAME_TYPE {
                // nft prints string keys only when told they are in host byte order
                // (NFTNL_UDATA_SET_KEYBYTEORDER = BYTEORDER_HOST_ENDIAN).
                let mut udata = vec![sys::NFTNL_UDATA_SET_KEYBYTEORDER as u8, 4];
                udata.extend(1u32.to_ne_bytes());
                sys::nftnl_set_set_data(s, sys::NFTNL_SET_USERDATA as u16, udata.as_ptr().cast(), udata.len() as u32);
            }
            match spec.data {
                SetData::None => sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FLAGS as u16, 0),
                SetData::Verdict => {
                    sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FLAGS as u16, libc::NFT_SET_MAP as u32);
                    sys::nftnl_set_set_u32(s, sys::NFTNL_SET_DATA_TYPE as u16, libc::NFT_DATA_VERDICT);
                }
                SetData::Value { dtype, len } => {
                    sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FLAGS as u16, libc::NFT_SET_MAP as u32);
                    sys::nftnl_set_set_u32(s, sys::NFTNL_SET_DATA_TYPE as u16, dtype);
                    sys::nftnl_set_set_u32(s, sys::NFTNL_SET_DATA_LEN as u16, len);
                }
            }
        }
        set
    }

    pub fn add_elem(&mut self, key: &[u8], data: ElemData<'_>, comment: Option<&str>) {
        unsafe {
            let e = alloc(sys::nftnl_set_elem_alloc()).as_ptr();
            sys::nftnl_set_elem_set(e, sys::NFTNL_SET_ELEM_KEY as u16, key.as_ptr().cast(), key.len() as u32);
            match data {
                ElemData::None => {}
                ElemData::Jump(chain) => {
                    let chain = cstr(chain);
                    sys::nftnl_set_elem_set_u32(e, sys::NFTNL_SET_ELEM_VERDICT as u16, libc::NFT_JUMP as u32);
                    sys::nftnl_set_elem_set_str(e, sys::NFTNL_SET_ELEM_CHAIN as u16, chain.as_ptr());
                }
                ElemData::Value(v) => {
                    sys::nftnl_set_elem_set(e, sys::NFTNL_SET_ELEM_DATA as u16, v.as_ptr().cast(), v.len() as u32);
                }
            }
            if let Some(c) = comment {
                let u = comment_udata(c);
                sys::nftnl_set_elem_set(e, sys::NFTNL_SET_ELEM_USERDATA as u16, u.as_ptr().cast(), u.len() as u32);
            }
            sys::nftnl_set_elem_add(self.0.as_ptr(), e);
        }
    }
}

impl Drop for SetMsg {
    fn drop(&mut self) {
        unsafe { sys::nftnl_set_free(self.0.as_ptr()) }
    }
}

unsafe impl NlMsg for SetMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        unsafe {
            let h = object_hdr(buf, seq, msg_type, libc::NFT_MSG_NEWSET, libc::NFT_MSG_DELSET);
            sys::nftnl_set_nlmsg_build_payload(h, self.0.as_ptr());
        }
    }
}

/// The elements of a [`SetMsg`] as a NEWSETELEM (without NLM_F_EXCL: re-adding an identical
/// element succeeds, a different mapping for the same key fails with EEXIST) or DELSETELEM.
pub(crate) struct ElemsMsg<'a>(pub &'a SetMsg);

unsafe impl NlMsg for ElemsMsg<'_> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        unsafe {
            let h = object_hdr(buf, seq, msg_type, libc::NFT_MSG_NEWSETELEM, libc::NFT_MSG_DELSETELEM);
            sys::nftnl_set_elems_nlmsg_build_payload(h, self.0 .0.as_ptr());
        }
    }
}

/// An element read back from the kernel.
#[derive(Debug, Clone, Default)]
pub(crate) struct Elem {
    pub key: Vec<u8>,
    pub data: Vec<u8>,
    pub chain: Option<String>,
    pub comment: Option<String>,
}

/// A chain read back from the kernel.
#[derive(Debug, Clone)]
pub(crate) struct ChainInfo {
    pub name: String,
    pub comment: Option<String>,
}

/// The first error of a batch or request: the kernel's errno, and for a batch the sequence
/// number of the message it refused.
#[derive(Debug)]
pub(crate) struct NlError {
    pub err: io::Error,
    pub seq: Option<u32>,
    /// What the refused message was, when known.
    pub label: Option<String>,
}

impl std::fmt::Display for NlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "netlink: {}", self.err)?;
        if let Some(l) = &self.label {
            write!(f, " (in: {l})")?;
        }
        Ok(())
    }
}

impl std::error::Error for NlError {}

impl NlError {
    pub fn errno(&self) -> Option<Errno> {
        self.err.raw_os_error().map(Errno::from_raw)
    }
}

impl From<io::Error> for NlError {
    fn from(err: io::Error) -> Self {
        Self { err, seq: None, label: None }
    }
}

/// One message received from the kernel.
struct Incoming {
    ty: u16,
    flags: u16,
    seq: u32,
    bytes: Vec<u8>,
}

pub(crate) struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

fn setsockopt_int(fd: i32, level: i32, opt: i32, value: i32) -> io::Result<()> {
    let r =
        unsafe { libc::setsockopt(fd, level, opt, (&value as *const i32).cast(), std::mem::size_of::<i32>() as u32) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Socket {
    /// A netfilter netlink socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let raw =
            unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_NETFILTER) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        let r = unsafe {
            libc::bind(raw, (&addr as *const libc::sockaddr_nl).cast(), std::mem::size_of::<libc::sockaddr_nl>() as u32)
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // Acks carry only headers; big buffers for big batches and dumps (root may force them).
        setsockopt_int(raw, libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1)?;
        let _ = setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 4 << 20);
        let _ = setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 4 << 20);
        let tv = libc::timeval { tv_sec: 10, tv_usec: 0 };
        let r = unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, seq: 1 << 24, buf: vec![0; 1 << 20] })
    }

    fn send_iov(&self, iov: &[libc::iovec]) -> io::Result<()> {
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut addr as *mut libc::sockaddr_nl).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as u32;
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len();
        let r = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, 0) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Receives one datagram; returns the messages in it.
    fn recv(&mut self) -> io::Result<Vec<Incoming>> {
        self.recv_flags(0)
    }

    fn recv_flags(&mut self, flags: i32) -> io::Result<Vec<Incoming>> {
        let n = loop {
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), self.buf.as_mut_ptr().cast(), self.buf.len(), flags) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if e.kind() == io::ErrorKind::WouldBlock && flags & libc::MSG_DONTWAIT == 0 {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer from nf_tables within 10 s"));
                }
                return Err(e);
            }
            break n as usize;
        };
        let mut out = Vec::new();
        let mut off = 0;
        let data = &self.buf[..n];
        while off + 16 <= n {
            let len = u32::from_ne_bytes(data[off..off + 4].try_into().unwrap()) as usize;
            if len < 16 || off + len > n {
                break;
            }
            let ty = u16::from_ne_bytes(data[off + 4..off + 6].try_into().unwrap());
            let flags = u16::from_ne_bytes(data[off + 6..off + 8].try_into().unwrap());
            let seq = u32::from_ne_bytes(data[off + 8..off + 12].try_into().unwrap());
            out.push(Incoming { ty, flags, seq, bytes: data[off..off + len].to_vec() });
            off += (len + 3) & !3;
        }
        Ok(out)
    }

    /// Sends a batch (one transaction) and waits for every ack; returns the first error.
    pub fn apply(&mut self, batch: &FinalizedBatch) -> Result<(), NlError> {
        let iov: Vec<libc::iovec> = batch
            .iter()
            .map(|page| libc::iovec { iov_base: page.as_ptr() as *mut c_void, iov_len: page.len() })
            .collect();
        self.send_iov(&iov)?;
        let seqs = batch.sequence_numbers();
        let last = seqs.end.wrapping_sub(1);
        // nfnetlink handles the batch within sendmsg(): every answer is queued by now. Read them
        // without blocking; wait (bounded) only if the last ack is somehow not there.
        let mut first_err: Option<NlError> = None;
        loop {
            let msgs = match self.recv_flags(libc::MSG_DONTWAIT) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && first_err.is_some() => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.recv()?,
                Err(e) => return Err(first_err.unwrap_or(e.into())),
            };
            let mut done = false;
            // Answers to earlier requests (a get's trailing ack) carry other sequence numbers.
            for m in msgs.into_iter().filter(|m| seqs.contains(&m.seq)) {
                if i32::from(m.ty) == libc::NLMSG_ERROR && m.bytes.len() >= 20 {
                    let code = i32::from_ne_bytes(m.bytes[16..20].try_into().unwrap());
                    if code != 0 && first_err.is_none() {
                        first_err =
                            Some(NlError { err: io::Error::from_raw_os_error(-code), seq: Some(m.seq), label: None });
                    }
                }
                if m.seq == last {
                    done = true;
                }
            }
            if done {
                break;
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Sends one request built by `build` into a zeroed buffer and collects the answer messages
    /// until NLMSG_DONE (dumps) or the first reply (get).
    fn request(&mut self, build: impl FnOnce(*mut c_void, u32)) -> Result<Vec<Vec<u8>>, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut buf = vec![0u32; nftnl::nft_nlmsg_maxsize() as usize / 4];
        build(buf.as_mut_ptr().cast(), seq);
        let len = buf[0] as usize;
        let iov = [libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: len }];
        self.send_iov(&iov)?;
        let mut out = Vec::new();
        loop {
            for m in self.recv()? {
                if m.seq != seq {
                    continue;
                }
                match i32::from(m.ty) {
                    libc::NLMSG_DONE => return Ok(out),
                    libc::NLMSG_ERROR => {
                        let code = i32::from_ne_bytes(m.bytes[16..20].try_into().unwrap());
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code).into());
                        }
                        return Ok(out);
                    }
                    _ => {
                        let multi = i32::from(m.flags) & libc::NLM_F_MULTI != 0;
                        out.push(m.bytes);
                        if !multi {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }

    /// Every chain of `inet netloom` (empty when the table does not exist).
    pub fn chains(&mut self) -> Result<Vec<ChainInfo>, NlError> {
        let msgs = self.request(|buf, seq| unsafe {
            build_hdr(buf, libc::NFT_MSG_GETCHAIN, libc::NLM_F_DUMP, seq);
        })?;
        let mut out = Vec::new();
        for m in msgs {
            let aligned = to_aligned(&m);
            unsafe {
                let c = alloc(sys::nftnl_chain_alloc()).as_ptr();
                if sys::nftnl_chain_nlmsg_parse(aligned.as_ptr().cast(), c) >= 0 {
                    let table = str_attr(sys::nftnl_chain_get_str(c, sys::NFTNL_CHAIN_TABLE as u16));
                    let family = sys::nftnl_chain_get_u32(c, sys::NFTNL_CHAIN_FAMILY as u16);
                    if table.as_deref() == Some(TABLE) && family == u32::from(FAMILY) {
                        let name =
                            str_attr(sys::nftnl_chain_get_str(c, sys::NFTNL_CHAIN_NAME as u16)).unwrap_or_default();
                        let mut len = 0u32;
                        let comment = if sys::nftnl_chain_is_set(c, sys::NFTNL_CHAIN_USERDATA as u16) {
                            let p = sys::nftnl_chain_get_data(c, sys::NFTNL_CHAIN_USERDATA as u16, &mut len);
                            parse_comment_udata(std::slice::from_raw_parts(p.cast::<u8>(), len as usize))
                        } else {
                            None
                        };
                        out.push(ChainInfo { name, comment });
                    }
                }
                sys::nftnl_chain_free(c);
            }
        }
        Ok(out)
    }

    /// Every element of a set (empty when the set or table does not exist).
    pub fn elems(&mut self, set: &str) -> Result<Vec<Elem>, NlError> {
        self.get_elems(set, None)
    }

    /// The element with this key, if present.
    pub fn elem(&mut self, set: &str, key: &[u8]) -> Result<Option<Elem>, NlError> {
        Ok(self.get_elems(set, Some(key))?.into_iter().next())
    }

    fn get_elems(&mut self, set: &str, key: Option<&[u8]>) -> Result<Vec<Elem>, NlError> {
        let mut query = SetMsg::named(set);
        if let Some(k) = key {
            query.add_elem(k, ElemData::None, None);
        }
        let flags = if key.is_some() { libc::NLM_F_ACK } else { libc::NLM_F_DUMP };
        let msgs = match self.request(|buf, seq| unsafe {
            let h = build_hdr(buf, libc::NFT_MSG_GETSETELEM, flags, seq);
            sys::nftnl_set_elems_nlmsg_build_payload(h, query.0.as_ptr());
        }) {
            Ok(m) => m,
            Err(e) if e.errno() == Some(Errno::ENOENT) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for m in msgs {
            let aligned = to_aligned(&m);
            unsafe {
                let s = alloc(sys::nftnl_set_alloc()).as_ptr();
                if sys::nftnl_set_elems_nlmsg_parse(aligned.as_ptr().cast(), s) >= 0 {
                    let it = sys::nftnl_set_elems_iter_create(s);
                    if !it.is_null() {
                        let mut e = sys::nftnl_set_elems_iter_next(it);
                        while !e.is_null() {
                            out.push(read_elem(e));
                            e = sys::nftnl_set_elems_iter_next(it);
                        }
                        sys::nftnl_set_elems_iter_destroy(it);
                    }
                }
                sys::nftnl_set_free(s);
            }
        }
        Ok(out)
    }
}

unsafe fn str_attr(p: *const std::os::raw::c_char) -> Option<String> {
    if p.is_null() {
        None
    } else {
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
}

unsafe fn bytes_attr(e: *mut sys::nftnl_set_elem, attr: u32) -> Option<Vec<u8>> {
    unsafe {
        if !sys::nftnl_set_elem_is_set(e, attr as u16) {
            return None;
        }
        let mut len = 0u32;
        let p = sys::nftnl_set_elem_get(e, attr as u16, &mut len);
        (!p.is_null()).then(|| std::slice::from_raw_parts(p.cast::<u8>(), len as usize).to_vec())
    }
}

unsafe fn read_elem(e: *mut sys::nftnl_set_elem) -> Elem {
    unsafe {
        Elem {
            key: bytes_attr(e, sys::NFTNL_SET_ELEM_KEY).unwrap_or_default(),
            data: bytes_attr(e, sys::NFTNL_SET_ELEM_DATA).unwrap_or_default(),
            chain: if sys::nftnl_set_elem_is_set(e, sys::NFTNL_SET_ELEM_CHAIN as u16) {
                str_attr(sys::nftnl_set_elem_get_str(e, sys::NFTNL_SET_ELEM_CHAIN as u16))
            } else {
                None
            },
            comment: bytes_attr(e, sys::NFTNL_SET_ELEM_USERDATA).and_then(|u| parse_comment_udata(&u)),
        }
    }
}

/// A message copied into 4-byte-aligned memory for libnftnl's parsers.
fn to_aligned(msg: &[u8]) -> Vec<u32> {
    let mut v = vec![0u32; msg.len().div_ceil(4)];
    unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), v.as_mut_ptr().cast::<u8>(), msg.len()) };
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_round_trip_through_udata() {
        let u = comment_udata("netloom net=abc ep=def");
        assert_eq!(u[0], 0);
        assert_eq!(parse_comment_udata(&u).as_deref(), Some("netloom net=abc ep=def"));
        // Another TLV first (e.g. a flags attribute), then the comment.
        let mut two = vec![1u8, 4, 0, 0, 0, 0];
        two.extend(&u);
        assert_eq!(parse_comment_udata(&two).as_deref(), Some("netloom net=abc ep=def"));
        assert_eq!(parse_comment_udata(&[]), None);
    }
}
