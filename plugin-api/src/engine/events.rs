//! Docker's event stream: JSON objects one after another (dockerd ends each with a newline, but
//! chunks may split or join them anywhere), read as they come.

use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tracing::debug;

use crate::engine::decode::RawEvent;
use crate::engine::model::NetworkEvent;

/// How many events may wait for the reader before the stream waits for it.
const BACKLOG: usize = 256;

/// Reads `body` in a task of its own and sends each network event; the receiver sees the end
/// (`None`) when the stream ends or breaks.
pub(crate) fn forward(mut body: Incoming) -> mpsc::Receiver<NetworkEvent> {
    let (sender, receiver) = mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        let mut splitter = Splitter::default();
        while let Some(frame) = body.frame().await {
            let data = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
                Err(e) => {
                    debug!(error = %e, "Docker's event stream broke");
                    return;
                }
            };
            for event in splitter.push(&data) {
                if sender.send(event).await.is_err() {
                    return;
                }
            }
        }
    });
    receiver
}

/// Bytes in, whole events out: one JSON object per line.
#[derive(Default)]
pub(crate) struct Splitter {
    pending: Vec<u8>,
}

impl Splitter {
    pub(crate) fn push(&mut self, data: &[u8]) -> Vec<NetworkEvent> {
        self.pending.extend_from_slice(data);
        let Some(last_newline) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = self.pending.drain(..=last_newline).collect();
        complete
            .split(|b| *b == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .filter_map(|line| match serde_json::from_slice::<RawEvent>(line) {
                Ok(raw) => raw.into_network_event(),
                Err(e) => {
                    debug!(error = %e, "unreadable line in Docker's event stream skipped");
                    None
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_and_joined_in_chunks_come_out_whole() {
        let a =
            r#"{"Type":"network","Action":"create","Actor":{"ID":"n1","Attributes":{"name":"a","type":"loom-null"}}}"#;
        let b = r#"{"Type":"container","Action":"start","Actor":{"ID":"c1"}}"#;
        let c =
            r#"{"Type":"network","Action":"destroy","Actor":{"ID":"n1","Attributes":{"name":"a","type":"loom-null"}}}"#;
        let stream = format!("{a}\n{b}\nnot json\n{c}\n");
        let mut splitter = Splitter::default();
        let (first, second) = stream.as_bytes().split_at(a.len() / 2);
        assert!(splitter.push(first).is_empty());
        let events = splitter.push(second);
        let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["create", "destroy"]);
        assert!(splitter.pending.is_empty());
    }
}
