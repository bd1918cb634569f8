//! Usage accounting, off the hot path.
//!
//! [`extract`] finds token counts (and cost) in the parts of a response body that can carry
//! them — the first frame and the tail the `PassthroughBody` kept by reference — never in every
//! chunk. [`Recorder`] takes records through a bounded channel (a full channel drops the record
//! and counts it, it never blocks a request) to a task that writes them in batches, flushing by
//! size or time, and on shutdown.

use crate::metrics::Metrics;
use crate::store::{AuditEntry, Store};
pub use crate::store::{Usage, UsageRecord, UsageRow};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The JSON object that follows the `"usage":` at `at` in `buf`, if it is complete.
fn usage_object_at(buf: &[u8], at: usize) -> Option<Value> {
    let rest = buf.get(at + b"\"usage\":".len()..)?;
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    if rest[start] != b'{' {
        return None;
    }
    serde_json::Deserializer::from_slice(&rest[start..])
        .into_iter::<Value>()
        .next()?
        .ok()
}

fn usage_objects(buf: &[u8]) -> impl DoubleEndedIterator<Item = Value> + '_ {
    let needle = b"\"usage\":";
    let positions: Vec<usize> = buf
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| w == needle)
        .map(|(i, _)| i)
        .collect();
    positions
        .into_iter()
        .filter_map(move |p| usage_object_at(buf, p))
}

fn count(v: &Value, keys: &[&str]) -> Option<u64> {
    keys.iter().find_map(|k| v.get(*k).and_then(Value::as_u64))
}

/// Usage from the head (first frame) and tail (last frames) of a response body. The last
/// complete `usage` object wins (for chat completions, responses and embeddings, JSON or SSE);
/// Anthropic streams report input tokens at the start and output tokens at the end, so a
/// missing prompt count is taken from the head.
pub fn extract(head: &[u8], tail: &[u8]) -> Option<Usage> {
    let last = usage_objects(tail)
        .next_back()
        .or_else(|| usage_objects(head).next_back())?;
    let prompt_keys = ["prompt_tokens", "input_tokens"];
    let completion_keys = ["completion_tokens", "output_tokens"];
    let prompt = count(&last, &prompt_keys).or_else(|| {
        usage_objects(head)
            .chain(usage_objects(tail))
            .find_map(|u| count(&u, &prompt_keys))
    });
    Some(Usage {
        prompt_tokens: prompt.unwrap_or(0),
        completion_tokens: count(&last, &completion_keys).unwrap_or(0),
        cost: last.get("cost").and_then(Value::as_f64),
        is_byok: last.get("is_byok").and_then(Value::as_bool),
    })
}

// Records are the common message: boxing them would add an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Record(UsageRecord),
    Flush(oneshot::Sender<()>),
}

/// Sends usage records to the batch writer.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Msg>,
    metrics: Arc<Metrics>,
}

/// Records per batch, and the longest a record waits before it is written.
const BATCH: usize = 256;
const FLUSH_EVERY: Duration = Duration::from_millis(500);

impl Recorder {
    /// Starts the writer task.
    pub fn spawn(store: Store, metrics: Arc<Metrics>, capacity: usize) -> Recorder {
        let (tx, rx) = mpsc::channel(capacity);
        tokio::spawn(writer(store, rx));
        Recorder { tx, metrics }
    }

    /// Queues a record; if the queue is full it is dropped and counted, never awaited.
    pub fn record(&self, r: UsageRecord) {
        if self.tx.try_send(Msg::Record(r)).is_err() {
            self.metrics.usage_dropped.inc();
        }
    }

    /// Writes everything queued so far.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn writer(store: Store, mut rx: mpsc::Receiver<Msg>) {
    let mut batch: Vec<UsageRecord> = Vec::with_capacity(BATCH);
    loop {
        let msg = if batch.is_empty() {
            rx.recv().await
        } else {
            match tokio::time::timeout(FLUSH_EVERY, rx.recv()).await {
                Ok(m) => m,
                Err(_) => {
                    write(&store, &mut batch).await;
                    continue;
                }
            }
        };
        match msg {
            Some(Msg::Record(r)) => {
                batch.push(r);
                if batch.len() >= BATCH {
                    write(&store, &mut batch).await;
                }
            }
            Some(Msg::Flush(done)) => {
                write(&store, &mut batch).await;
                let _ = done.send(());
            }
            None => {
                write(&store, &mut batch).await;
                return;
            }
        }
    }
}

async fn write(store: &Store, batch: &mut Vec<UsageRecord>) {
    if batch.is_empty() {
        return;
    }
    let records = std::mem::take(batch);
    for r in &records {
        if let Some(s) = &r.system {
            let entry = AuditEntry {
                actor_user_id: Some(r.user_id),
                action: "byok.system_credentials_used",
                target: Some(format!("provider:{}", s.provider)),
                detail: serde_json::json!({
                    "model": r.model,
                    "provider": s.provider,
                    "byok_status": s.byok_status,
                }),
                request_id: Some(r.request_id.clone()),
                remote_addr: None,
            };
            if let Err(e) = store.append_audit(entry).await {
                tracing::warn!(error = %e, "could not audit a system-credential use");
            }
        }
    }
    if let Err(e) = store.insert_usage(&records).await {
        tracing::error!(error = %e, records = records.len(), "could not write usage records");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_json_takes_the_top_level_usage() {
        let body = br#"{"id":"gen_1","choices":[{"message":{"content":"hi","provider_metadata":{"anthropic":{"usage":{"input_tokens":99,"output_tokens":98}}}}}],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18,"cost":0.00042,"is_byok":true}}"#;
        let u = extract(body, body).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (11, 7));
        assert_eq!(u.cost, Some(0.00042));
        assert_eq!(u.is_byok, Some(true));
    }

    #[test]
    fn sse_streams() {
        let chat = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"is_byok\":false}}\n\ndata: [DONE]\n\n";
        let u = extract(chat, chat).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.is_byok),
            (3, 4, Some(false))
        );
        let head = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n";
        let tail = b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":6}}\n\nevent: message_stop\ndata: {}\n\n";
        let u = extract(head, tail).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (12, 6));
        // A tail cut in the middle of the usage object finds nothing rather than garbage.
        assert!(extract(b"", b"data: {\"usage\":{\"prompt_tokens\":3,").is_none());
    }
}
