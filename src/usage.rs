//! Usage accounting, off the hot path.
//!
//! [`AnswerScan`] watches a response body go by and keeps only the `"usage": {...}` objects
//! and the last `"routing": {...}` object in it (a copy of those few bytes, never a reference
//! that would pin a whole read buffer);
//! [`extract`] then reads token counts (and cost) from the first and last of them at the end
//! of the body. [`Recorder`] takes records through a bounded channel (a full channel drops the record
//! and counts it, it never blocks a request) to a task that writes them in batches, flushing by
//! size or time, and on shutdown.

use crate::metrics::Metrics;
use crate::store::{AuditEntry, Store};
pub use crate::store::{Usage, UsageRecord, UsageRow};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The longest key an [`ObjectScan`] looks for, quotes included.
const MAX_KEY: usize = 16;

static USAGE_KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));
static ROUTING_KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"routing\""));

/// What the end of a proxied answer is read for, collected while it goes by: the first and
/// last `"usage": {...}` objects (token counts, cost, `is_byok`) and the last
/// `"routing": {...}` object (the gateway's routing metadata, where a fallback to system
/// credentials shows). Copies of those few bytes only, never a reference that would pin a
/// whole read buffer.
#[derive(Debug)]
pub struct AnswerScan {
    usage: ObjectScan,
    routing: ObjectScan,
}

impl Default for AnswerScan {
    fn default() -> Self {
        AnswerScan {
            // The key a usage object follows, quotes included (`"usage"` inside a JSON string
            // is escaped, so this matches keys and the odd string value, which the `:` check
            // then skips); a usage object longer than 4 KiB is not one we can read.
            usage: ObjectScan::new(&USAGE_KEY, 4096),
            // Routing metadata lists every attempt; 16 KiB is far above what it holds.
            routing: ObjectScan::new(&ROUTING_KEY, 16 * 1024),
        }
    }
}

/// What [`AnswerScan`] kept.
#[derive(Debug, Default)]
pub struct Scanned {
    pub first_usage: Option<Bytes>,
    pub last_usage: Option<Bytes>,
    pub routing: Option<Bytes>,
}

impl AnswerScan {
    /// Scans the next frame of the body.
    pub fn feed(&mut self, data: &[u8]) {
        self.usage.feed(data);
        self.routing.feed(data);
    }

    /// What was kept, taken out of the scan.
    pub fn take(&mut self) -> Scanned {
        let (first_usage, last_usage) = self.usage.take();
        let (_, routing) = self.routing.take();
        Scanned {
            first_usage,
            last_usage,
            routing,
        }
    }
}

/// Where the scan is between two frames.
#[derive(Debug, Default)]
enum ScanState {
    /// Looking for the key.
    #[default]
    Search,
    /// After the key: whitespace, then `:` (once `colon`), whitespace, then `{`.
    Key { colon: bool },
    /// Inside the object: `buf` holds `"key":{...` so far.
    Object {
        buf: Vec<u8>,
        depth: u32,
        in_string: bool,
        escaped: bool,
    },
}

/// Finds the `"<key>": {...}` objects of a body frame by frame, keeping a copy of the first
/// and the last complete one and nothing else: per frame it costs one substring search (SIMD)
/// and, when the key straddles two frames, a look at a few carried-over bytes. Objects may be
/// split across any number of frames.
#[derive(Debug)]
pub struct ObjectScan {
    finder: &'static memchr::memmem::Finder<'static>,
    /// The longest object kept; a longer one is skipped.
    max: usize,
    state: ScanState,
    /// The end of the previous frame, while searching (a key may start there).
    carry: [u8; MAX_KEY - 1],
    carry_len: u8,
    first: Option<Bytes>,
    last: Option<Bytes>,
}

impl ObjectScan {
    fn new(finder: &'static memchr::memmem::Finder<'static>, max: usize) -> ObjectScan {
        debug_assert!(finder.needle().len() <= MAX_KEY);
        ObjectScan {
            finder,
            max,
            state: ScanState::Search,
            carry: [0; MAX_KEY - 1],
            carry_len: 0,
            first: None,
            last: None,
        }
    }

    fn key(&self) -> &'static [u8] {
        self.finder.needle()
    }

    /// Scans the next frame of the body.
    pub fn feed(&mut self, data: &[u8]) {
        let key = self.key();
        let mut i = 0;
        if matches!(self.state, ScanState::Search) && self.carry_len > 0 {
            i = self.straddling_key(data);
        }
        while i < data.len() {
            match &mut self.state {
                ScanState::Search => match self.finder.find(&data[i..]) {
                    Some(p) => {
                        i += p + key.len();
                        self.state = ScanState::Key { colon: false };
                    }
                    None => {
                        self.keep_carry(data);
                        return;
                    }
                },
                ScanState::Key { colon } => {
                    let b = data[i];
                    i += 1;
                    match b {
                        b' ' | b'\t' | b'\r' | b'\n' => {}
                        b':' if !*colon => *colon = true,
                        b'{' if *colon => {
                            let mut buf = Vec::with_capacity(256);
                            buf.extend_from_slice(key);
                            buf.extend_from_slice(b":{");
                            self.state = ScanState::Object {
                                buf,
                                depth: 1,
                                in_string: false,
                                escaped: false,
                            };
                        }
                        // `"usage": null`, `"type":"usage"`, ...: not an object.
                        _ => self.state = ScanState::Search,
                    }
                }
                ScanState::Object {
                    buf,
                    depth,
                    in_string,
                    escaped,
                } => {
                    let start = i;
                    let mut done = false;
                    while i < data.len() {
                        let b = data[i];
                        i += 1;
                        if *in_string {
                            if *escaped {
                                *escaped = false;
                            } else if b == b'\\' {
                                *escaped = true;
                            } else if b == b'"' {
                                *in_string = false;
                            }
                        } else if b == b'"' {
                            *in_string = true;
                        } else if b == b'{' {
                            *depth += 1;
                        } else if b == b'}' {
                            *depth -= 1;
                            if *depth == 0 {
                                done = true;
                                break;
                            }
                        }
                    }
                    if buf.len() + (i - start) > self.max {
                        self.state = ScanState::Search;
                        continue;
                    }
                    buf.extend_from_slice(&data[start..i]);
                    if done {
                        let object = Bytes::from(std::mem::take(buf));
                        if self.first.is_none() {
                            self.first = Some(object.clone());
                        }
                        self.last = Some(object);
                        self.state = ScanState::Search;
                    }
                }
            }
        }
        if matches!(self.state, ScanState::Search) {
            self.keep_carry(data);
        } else {
            self.carry_len = 0;
        }
    }

    /// A key that began in the carried-over bytes and ends in `data`: where the scan goes on
    /// in `data` (0 if there is none).
    fn straddling_key(&mut self, data: &[u8]) -> usize {
        let key = self.key();
        let carry = usize::from(self.carry_len);
        let mut window = [0u8; 2 * (MAX_KEY - 1)];
        let take = data.len().min(key.len() - 1);
        window[..carry].copy_from_slice(&self.carry[..carry]);
        window[carry..carry + take].copy_from_slice(&data[..take]);
        match self.finder.find(&window[..carry + take]) {
            Some(p) if p < carry => {
                self.carry_len = 0;
                self.state = ScanState::Key { colon: false };
                p + key.len() - carry
            }
            _ => 0,
        }
    }

    fn keep_carry(&mut self, data: &[u8]) {
        let carry_max = self.key().len() - 1;
        if data.len() >= carry_max {
            self.carry[..carry_max].copy_from_slice(&data[data.len() - carry_max..]);
            self.carry_len = carry_max as u8;
        } else {
            // A tiny frame: append it to what is carried, keeping the last bytes.
            let mut joined = [0u8; 2 * (MAX_KEY - 1)];
            let old = usize::from(self.carry_len);
            joined[..old].copy_from_slice(&self.carry[..old]);
            joined[old..old + data.len()].copy_from_slice(data);
            let n = old + data.len();
            let keep = n.min(carry_max);
            self.carry[..keep].copy_from_slice(&joined[n - keep..n]);
            self.carry_len = keep as u8;
        }
    }

    /// The first and the last complete objects, taken out of the scan.
    pub fn take(&mut self) -> (Option<Bytes>, Option<Bytes>) {
        (self.first.take(), self.last.take())
    }
}

/// The fields of a usage object that accounting reads, as borrowed raw JSON (every other
/// field is skipped without being built; a field of an unexpected type reads as absent).
#[derive(serde::Deserialize)]
struct RawCounts<'a> {
    #[serde(borrow, default)]
    prompt_tokens: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    input_tokens: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    completion_tokens: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    output_tokens: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    cost: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    is_byok: Option<&'a serde_json::value::RawValue>,
}

/// One usage object's counts.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    prompt: Option<u64>,
    completion: Option<u64>,
    cost: Option<f64>,
    is_byok: Option<bool>,
}

fn field<'a, T: serde::Deserialize<'a>>(raw: Option<&'a serde_json::value::RawValue>) -> Option<T> {
    raw.and_then(|r| serde_json::from_str(r.get()).ok())
}

/// The usage object that follows the `"usage":` at `at` in `buf`, if it is complete.
fn usage_object_at(buf: &[u8], at: usize) -> Option<Counts> {
    let rest = buf.get(at + b"\"usage\":".len()..)?;
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    if rest[start] != b'{' {
        return None;
    }
    let raw: RawCounts<'_> = serde_json::Deserializer::from_slice(&rest[start..])
        .into_iter::<RawCounts<'_>>()
        .next()?
        .ok()?;
    Some(Counts {
        prompt: field(raw.prompt_tokens).or_else(|| field(raw.input_tokens)),
        completion: field(raw.completion_tokens).or_else(|| field(raw.output_tokens)),
        cost: field(raw.cost),
        is_byok: field(raw.is_byok),
    })
}

/// Every complete usage object in `buf`, in order.
fn usage_objects(buf: &[u8]) -> impl DoubleEndedIterator<Item = Counts> + '_ {
    static KEY_COLON: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\":"));
    let positions: Vec<usize> = KEY_COLON.find_iter(buf).collect();
    positions
        .into_iter()
        .filter_map(move |p| usage_object_at(buf, p))
}

/// Usage from the first and the last usage objects of a response body (what [`AnswerScan`]
/// kept; any buffer that holds them works). The last complete `usage` object wins (for chat
/// completions, responses and embeddings, JSON or SSE); Anthropic streams report input tokens
/// at the start and output tokens at the end, so a missing prompt count is taken from the
/// head.
pub fn extract(head: &[u8], tail: &[u8]) -> Option<Usage> {
    let last = usage_objects(tail)
        .next_back()
        .or_else(|| usage_objects(head).next_back())?;
    let prompt = last.prompt.or_else(|| {
        usage_objects(head)
            .chain(usage_objects(tail))
            .find_map(|u| u.prompt)
    });
    Some(Usage {
        prompt_tokens: prompt.unwrap_or(0),
        completion_tokens: last.completion.unwrap_or(0),
        cost: last.cost,
        is_byok: last.is_byok,
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

    /// Feeds `body` cut into frames of `size` bytes; returns the usage found in what was kept.
    fn scan_in_frames(body: &[u8], size: usize) -> Option<Usage> {
        let mut scan = AnswerScan::default();
        for frame in body.chunks(size) {
            scan.feed(frame);
        }
        let kept = scan.take();
        extract(
            kept.first_usage.as_deref().unwrap_or_default(),
            kept.last_usage.as_deref().unwrap_or_default(),
        )
    }

    #[test]
    fn the_scan_finds_what_extract_finds_however_the_body_is_cut() {
        let bodies: [&[u8]; 4] = [
            br#"{"id":"gen_1","choices":[{"message":{"content":"say \"usage\": {\"prompt_tokens\":5}","provider_metadata":{"anthropic":{"usage":{"input_tokens":99,"output_tokens":98}}}}}],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18,"cost":0.00042,"is_byok":true,"x":{"a":"}{\"\\"}}}"#,
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\ndata: {\"type\":\"usage\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"is_byok\":false}}\n\ndata: [DONE]\n\n",
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"delta\":{\"text\":\"hi\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":6}}\n\nevent: message_stop\ndata: {}\n\n",
            b"data: {\"choices\":[{\"delta\":{\"content\":\"no usage here\"}}]}\n\n",
        ];
        let want = [
            Some((11, 7, Some(0.00042), Some(true))),
            Some((3, 4, None, Some(false))),
            Some((12, 6, None, None)),
            None,
        ];
        for (body, want) in bodies.iter().zip(want) {
            for size in [1, 2, 3, 5, 6, 7, 8, 13, 64, body.len()] {
                let got = scan_in_frames(body, size)
                    .map(|u| (u.prompt_tokens, u.completion_tokens, u.cost, u.is_byok));
                assert_eq!(got, want, "frames of {size} bytes");
            }
            assert_eq!(
                extract(body, body).map(|u| (u.prompt_tokens, u.completion_tokens)),
                want.map(|w| (w.0, w.1))
            );
        }
    }

    #[test]
    fn the_scan_allows_whitespace_around_the_colon() {
        let u = scan_in_frames(
            b"{\"usage\" :\n {\"prompt_tokens\": 2, \"completion_tokens\": 3}}",
            4,
        );
        assert_eq!(
            u.map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((2, 3))
        );
    }

    #[test]
    fn the_scan_keeps_only_usage_objects() {
        let mut scan = AnswerScan::default();
        let filler = vec![b'x'; 100_000];
        scan.feed(&filler);
        scan.feed(b"\"usage\":{\"prompt_tokens\":1}");
        scan.feed(&filler);
        let kept = scan.take();
        assert_eq!(
            kept.first_usage.as_deref(),
            Some(&b"\"usage\":{\"prompt_tokens\":1}"[..])
        );
        assert_eq!(kept.first_usage, kept.last_usage);
        assert_eq!(kept.routing, None);
        // An object that never closes is dropped once it passes the cap.
        let mut scan = AnswerScan::default();
        scan.feed(b"\"usage\":{\"a\":[");
        scan.feed(&filler);
        let kept = scan.take();
        assert_eq!((kept.first_usage, kept.last_usage), (None, None));
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

    #[test]
    fn the_scan_keeps_the_last_routing_object() {
        let body = b"data: {\"choices\":[{\"delta\":{\"provider_metadata\":{\"gateway\":{\"routing\" : {\"finalProvider\":\"openai\",\"attempts\":[{\"provider\":\"openai\",\"credentialType\":\"system\"}]}}}}}],\"usage\":{\"prompt_tokens\":1}}\n\n";
        for size in [1, 3, 9, 10, 64, body.len()] {
            let mut scan = AnswerScan::default();
            for f in body.chunks(size) {
                scan.feed(f);
            }
            let kept = scan.take();
            let routing = kept.routing.unwrap();
            assert!(
                routing.starts_with(b"\"routing\":{\"finalProvider\""),
                "{size}"
            );
            assert!(crate::upstream::gateway::system_credentials_used(&routing, None).is_some());
        }
    }

    proptest::proptest! {
        /// However a stream is cut into frames, the scan keeps what a whole-body search finds.
        #[test]
        fn any_split_yields_the_same_usage(
            prompt in 0u64..100_000,
            completion in 0u64..100_000,
            noise in "[ -~]{0,200}",
            cuts in proptest::collection::vec(1usize..40, 1..30),
        ) {
            let noise = noise.replace(['"', '\\'], "'");
            let body = format!(
                "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{noise}\"}}}}],\"usage\":null}}\n\n\
                 data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion}}}}}\n\ndata: [DONE]\n\n"
            );
            let bytes = body.as_bytes();
            let mut scan = AnswerScan::default();
            let mut at = 0;
            for c in cuts.iter().cycle() {
                if at >= bytes.len() {
                    break;
                }
                let end = (at + c).min(bytes.len());
                scan.feed(&bytes[at..end]);
                at = end;
            }
            let kept = scan.take();
            let got = extract(
                kept.first_usage.as_deref().unwrap_or_default(),
                kept.last_usage.as_deref().unwrap_or_default(),
            )
            .map(|u| (u.prompt_tokens, u.completion_tokens));
            proptest::prop_assert_eq!(got, Some((prompt, completion)));
        }

        /// Garbage in any frames never panics.
        #[test]
        fn garbage_never_panics(frames in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0..20)) {
            let mut scan = AnswerScan::default();
            for f in &frames {
                scan.feed(f);
            }
            let kept = scan.take();
            let _ = extract(
                kept.first_usage.as_deref().unwrap_or_default(),
                kept.last_usage.as_deref().unwrap_or_default(),
            );
        }
    }
}
