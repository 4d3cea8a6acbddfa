//! The embedded DNS server of a network: UDP on the gateway address, port 53. It answers
//! `A` queries for the names of the containers attached to the network (container name,
//! aliases such as the Compose service name, id and short id; optionally followed by
//! `.<network>`) with the addresses of the live containers of that name, rotated on each
//! answer (round robin across replicas). Records are re-read when the network's file
//! changes, and a container whose network namespace is gone is left out, so answers follow
//! scaling, replacement and removal without restarting anyone.
//!
//! It forwards nothing: a name it does not know gets `REFUSED`, so the resolver of the
//! container moves on to the next `nameserver` of its `resolv.conf`.

use crate::store::{NetworkRecord, Store};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Time to live of an answer, in seconds (short: replicas come and go).
pub const TTL: u32 = 5;

/// The identity of a record file's content: inode (the file is replaced by rename) and
/// modification time.
type Stamp = (u64, i64, i64);

/// What the server knows of one network, re-read when its record changes.
pub struct Resolver {
    store: Store,
    network: String,
    cache: Mutex<Option<(Stamp, Arc<NetworkRecord>)>>,
    turn: AtomicUsize,
}

impl Resolver {
    pub fn new(store: Store, network: &str) -> Resolver {
        Resolver {
            store,
            network: network.to_string(),
            cache: Mutex::new(None),
            turn: AtomicUsize::new(0),
        }
    }

    fn record(&self) -> Option<Arc<NetworkRecord>> {
        let p = self.store.path(&self.network);
        let m = std::fs::metadata(&p).ok()?;
        let key = (m.ino(), m.mtime(), m.mtime_nsec());
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, r)) = c.as_ref() {
            if *k == key {
                return Some(r.clone());
            }
        }
        let r = Arc::new(self.store.load(&self.network).ok()?);
        *c = Some((key, r.clone()));
        Some(r)
    }

    /// The addresses of the live containers answering to `name`, rotated by one on every
    /// call; `None` if no live container has that name.
    pub fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        let mut n = name.trim_end_matches('.').to_ascii_lowercase();
        let suffix = format!(".{}", self.network.to_ascii_lowercase());
        if let Some(s) = n.strip_suffix(&suffix) {
            n = s.to_string();
        }
        let rec = self.record()?;
        let mut v: Vec<Ipv4Addr> = rec
            .endpoints
            .iter()
            .filter(|e| e.names().contains(&n) && e.alive())
            .map(|e| e.address)
            .collect();
        if v.is_empty() {
            return None;
        }
        let k = self.turn.fetch_add(1, Ordering::Relaxed) % v.len();
        v.rotate_left(k);
        Some(v)
    }
}

/// The reply to one query packet, or `None` for a packet that is not a DNS query.
pub fn answer(resolver: &Resolver, packet: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(packet).ok()?;
    if q.message_type() != MessageType::Query {
        return None;
    }
    let mut r = Message::new();
    r.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(false);
    r.add_queries(q.queries().to_vec());
    if q.op_code() != OpCode::Query || q.queries().len() != 1 {
        r.set_response_code(ResponseCode::NotImp);
        return r.to_vec().ok();
    }
    let query = &q.queries()[0];
    match resolver.lookup(&query.name().to_ascii()) {
        None => {
            r.set_response_code(ResponseCode::Refused);
        }
        Some(addrs) => {
            r.set_authoritative(true);
            r.set_response_code(ResponseCode::NoError);
            // A known name has no other records (AAAA, MX, ...): an empty NOERROR answer.
            if query.query_type() == RecordType::A {
                for a in addrs {
                    r.add_answer(Record::from_rdata(
                        query.name().clone(),
                        TTL,
                        RData::A(A(a)),
                    ));
                }
            }
        }
    }
    r.to_vec().ok()
}

/// Serve queries on `socket` until the task is aborted.
pub async fn serve(socket: tokio::net::UdpSocket, resolver: Arc<Resolver>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(network = resolver.network, "dns receive: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Some(reply) = answer(&resolver, &buf[..n]) {
            let _ = socket.send_to(&reply, from).await;
        }
    }
}
