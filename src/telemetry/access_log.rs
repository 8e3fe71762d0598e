//! The JSON access log (SPEC §8): lines are formatted on the request path and handed to a
//! writer thread through a bounded channel, so a slow disk never stalls a request.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use crossbeam_queue::ArrayQueue;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::IntGauge;

/// Lines buffered between the request path and the writer before new ones are dropped.
const QUEUE: usize = 64 * 1024;
/// Longest a written line waits in the write buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Written lines whose buffers wait to be reused for new lines.
const SPARE_LINES: usize = 1024;
/// A line buffer grown past this (a very long path) is freed rather than kept.
const SPARE_CAPACITY: usize = 4096;
/// A new line buffer's capacity: a typical line fits.
const LINE_CAPACITY: usize = 512;
/// How often the writer looks for queued lines (the queue holds far more than arrives in
/// this time at any realistic rate).
const POLL_EVERY: Duration = Duration::from_millis(10);

/// One access log record. Credentials are never fields of it.
pub struct Entry<'a> {
    /// When the request finished (`ts`, RFC 3339 UTC with milliseconds).
    pub ts: SystemTime,
    pub request_id: &'a str,
    pub trace_id: &'a str,
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub consumer: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub target: Option<&'a str>,
    pub variant: Option<&'a str>,
    pub status: u16,
    pub bytes_sent: usize,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    pub cache: Option<&'a str>,
    pub rate_limit: Option<&'a str>,
    pub error: Option<&'a str>,
}

impl Entry<'_> {
    /// Appends the entry as one JSON object (no newline) to `out`. Written by hand, field
    /// by field, into a buffer the writer hands back: no serializer, no allocation once
    /// the buffers are warm. Every string is escaped (most hold client bytes).
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"ts\":\"");
        rfc3339::write(self.ts, out);
        out.push_str("\",\"request_id\":");
        json::string(out, self.request_id);
        out.push_str(",\"trace_id\":");
        json::string(out, self.trace_id);
        out.push_str(",\"client_ip\":");
        match self.client_ip {
            Some(ip) => {
                out.push('"');
                json::ip(out, ip);
                out.push('"');
            }
            None => out.push_str("null"),
        }
        for (name, value) in [
            (",\"method\":", Some(self.method)),
            (",\"host\":", Some(self.host)),
            (",\"path\":", Some(self.path)),
            (",\"route\":", self.route),
            (",\"consumer\":", self.consumer),
            (",\"upstream\":", self.upstream),
            (",\"target\":", self.target),
            (",\"variant\":", self.variant),
        ] {
            out.push_str(name);
            json::optional_string(out, value);
        }
        out.push_str(",\"status\":");
        json::integer(out, self.status);
        out.push_str(",\"bytes_sent\":");
        json::integer(out, self.bytes_sent);
        out.push_str(",\"duration_ms\":");
        json::float(out, Some(self.duration_ms));
        out.push_str(",\"upstream_ms\":");
        json::float(out, self.upstream_ms);
        for (name, value) in [
            (",\"cache\":", self.cache),
            (",\"rate_limit\":", self.rate_limit),
            (",\"error\":", self.error),
        ] {
            out.push_str(name);
            json::optional_string(out, value);
        }
        out.push('}');
    }
}

/// JSON values written straight into a line.
mod json {
    use std::fmt::Write;
    use std::net::IpAddr;

    /// `value` as a JSON string. Quotes, backslashes and every control character are
    /// escaped, and so are DEL and U+2028/U+2029 (valid JSON, but they end lines in
    /// JavaScript and some log viewers): a hostile path or header cannot break the line
    /// or forge a field.
    pub fn string(out: &mut String, value: &str) {
        out.push('"');
        let bytes = value.as_bytes();
        let mut clean = 0;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let (escape, len): (&str, usize) = match b {
                b'"' => ("\\\"", 1),
                b'\\' => ("\\\\", 1),
                b'\n' => ("\\n", 1),
                b'\r' => ("\\r", 1),
                b'\t' => ("\\t", 1),
                0x08 => ("\\b", 1),
                0x0c => ("\\f", 1),
                0x00..=0x1f | 0x7f => ("", 1),
                // U+2028 and U+2029: E2 80 A8 / E2 80 A9.
                0xe2 if bytes.get(i + 1) == Some(&0x80)
                    && matches!(bytes.get(i + 2), Some(&(0xa8 | 0xa9))) =>
                {
                    if bytes[i + 2] == 0xa8 {
                        ("\\u2028", 3)
                    } else {
                        ("\\u2029", 3)
                    }
                }
                _ => {
                    i += 1;
                    continue;
                }
            };
            // Escaped characters are ASCII or whole 3-byte sequences: char boundaries.
            out.push_str(&value[clean..i]);
            if escape.is_empty() {
                let _ = write!(out, "\\u{b:04x}");
            } else {
                out.push_str(escape);
            }
            i += len;
            clean = i;
        }
        out.push_str(&value[clean..]);
        out.push('"');
    }

    /// A string, or `null`.
    pub fn optional_string(out: &mut String, value: Option<&str>) {
        match value {
            Some(value) => string(out, value),
            None => out.push_str("null"),
        }
    }

    pub fn integer(out: &mut String, value: impl itoa::Integer) {
        out.push_str(itoa::Buffer::new().format(value));
    }

    /// A number in serde_json's shortest round-trip form; `null` when absent or not
    /// finite (JSON has no NaN or infinity).
    pub fn float(out: &mut String, value: Option<f64>) {
        match value.filter(|value| value.is_finite()) {
            Some(value) => out.push_str(ryu::Buffer::new().format_finite(value)),
            None => out.push_str("null"),
        }
    }

    /// An address as text (IPv4 by hand: `Display` goes through the formatter's padding
    /// logic twice per address).
    pub fn ip(out: &mut String, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                let mut digits = itoa::Buffer::new();
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push('.');
                    }
                    out.push_str(digits.format(octet));
                }
            }
            IpAddr::V6(v6) => {
                let _ = write!(out, "{v6}");
            }
        }
    }
}

/// RFC 3339 timestamps in UTC with milliseconds (`2026-11-30T06:00:03.123Z`), the date and
/// time of day formatted once per second per thread.
mod rfc3339 {
    use std::cell::Cell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        /// The second last formatted on this thread and its `YYYY-MM-DDTHH:MM:SS`.
        static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }

    pub fn write(at: SystemTime, out: &mut String) {
        // A clock before 1970 is logged as the epoch.
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let (secs, millis) = (since.as_secs(), since.subsec_millis());
        let text = SECOND.with(|cached| {
            let (second, text) = cached.get();
            if second == secs {
                return text;
            }
            let text = date_time(secs);
            cached.set((secs, text));
            text
        });
        out.push_str(std::str::from_utf8(&text).unwrap_or("1970-01-01T00:00:00"));
        let millis = [
            b'.',
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
            b'Z',
        ];
        out.push_str(std::str::from_utf8(&millis).unwrap_or(".000Z"));
    }

    /// `YYYY-MM-DDTHH:MM:SS` of a Unix time (years past 9999 are written as 9999).
    pub fn date_time(secs: u64) -> [u8; 19] {
        let days = secs / 86_400;
        let of_day = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        let mut text = *b"0000-00-00T00:00:00";
        let mut put = |at: usize, value: u64, width: usize| {
            let mut value = value;
            for i in (at..at + width).rev() {
                text[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, year.min(9999), 4);
        put(5, month, 2);
        put(8, day, 2);
        put(11, of_day / 3600, 2);
        put(14, of_day / 60 % 60, 2);
        put(17, of_day % 60, 2);
        text
    }

    /// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
    /// `civil_from_days`, for non-negative days).
    fn civil_from_days(days: u64) -> (u64, u64, u64) {
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        (year, month, day)
    }
}

/// Where access log lines go.
#[derive(Clone)]
pub struct AccessLog {
    sender: Option<SyncSender<String>>,
    /// Buffers of written lines, handed back by the writer for the next lines.
    spare: Arc<ArrayQueue<String>>,
    /// Set by [`AccessLog::flush`]; the writer clears it once everything queued is written.
    flush_requested: Arc<AtomicBool>,
    receiver: Arc<Mutex<Option<Receiver<String>>>>,
    target: String,
    dropped: IntGauge,
}

impl AccessLog {
    /// A log to `target` (`stdout`, `off` or a file path); nothing is written until the
    /// [`AccessLogWriter`] service runs.
    pub fn new(target: &str, dropped: IntGauge) -> Self {
        let (sender, receiver) = if target == "off" {
            (None, None)
        } else {
            let (sender, receiver) = sync_channel(QUEUE);
            (Some(sender), Some(receiver))
        };
        Self {
            sender,
            spare: Arc::new(ArrayQueue::new(SPARE_LINES)),
            flush_requested: Arc::new(AtomicBool::new(false)),
            receiver: Arc::new(Mutex::new(receiver)),
            target: target.to_string(),
            dropped,
        }
    }

    /// Whether lines are written at all (skip building entries when not).
    pub fn enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Queues one entry; drops it (and counts the drop) if the writer is behind.
    pub fn write(&self, entry: &Entry<'_>) {
        let Some(sender) = &self.sender else { return };
        let mut line = self
            .spare
            .pop()
            .unwrap_or_else(|| String::with_capacity(LINE_CAPACITY));
        entry.write_json(&mut line);
        match sender.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }

    /// Writes out every line queued so far, waiting at most `timeout` (at shutdown).
    pub fn flush(&self, timeout: Duration) {
        if self.sender.is_none() {
            return;
        }
        self.flush_requested.store(true, Ordering::Release);
        let deadline = Instant::now() + timeout;
        while self.flush_requested.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The background service that writes queued lines.
    pub fn writer(&self) -> AccessLogWriter {
        AccessLogWriter { log: self.clone() }
    }
}

/// Drains the access log queue on a thread of its own.
pub struct AccessLogWriter {
    log: AccessLog,
}

#[async_trait]
impl BackgroundService for AccessLogWriter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let receiver = match self.log.receiver.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(receiver) = receiver else { return };
        let sink: Box<dyn Write + Send> = if self.log.target == "stdout" {
            Box::new(std::io::stdout())
        } else {
            match OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log.target)
            {
                Ok(file) => Box::new(file),
                Err(e) => {
                    log::error!("access log {}: {e}; access logging is off", self.log.target);
                    return;
                }
            }
        };
        // A plain thread: file writes block, and must not block a runtime worker.
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn({
                let flush_requested = Arc::clone(&self.log.flush_requested);
                let spare = Arc::clone(&self.log.spare);
                move || {
                    drain(
                        receiver,
                        BufWriter::with_capacity(64 * 1024, sink),
                        &flush_requested,
                        &spare,
                    )
                }
            });
        if let Err(e) = writer {
            log::error!("cannot start the access log writer: {e}");
            return;
        }
        let _ = shutdown.changed().await;
    }
}

/// Writes queued lines until every sender is gone. The writer polls instead of blocking
/// on the channel: a blocked receiver would make every request's send a futex wake-up and
/// a context switch, which cost more than formatting the line.
fn drain(
    receiver: Receiver<String>,
    mut out: BufWriter<Box<dyn Write + Send>>,
    flush_requested: &AtomicBool,
    spare: &ArrayQueue<String>,
) {
    let mut last_flush = Instant::now();
    loop {
        // Read before draining: every line queued before a flush request is drained below.
        let flushing = flush_requested.load(Ordering::Acquire);
        loop {
            match receiver.try_recv() {
                Ok(mut line) => {
                    let _ = out.write_all(line.as_bytes());
                    let _ = out.write_all(b"\n");
                    if line.capacity() <= SPARE_CAPACITY {
                        line.clear();
                        // Full: the request path has spares enough; this one is freed.
                        let _ = spare.push(line);
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        if flushing || last_flush.elapsed() >= FLUSH_EVERY {
            let _ = out.flush();
            last_flush = Instant::now();
        }
        if flushing {
            flush_requested.store(false, Ordering::Release);
        }
        std::thread::sleep(POLL_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use serde_json::Value;

    use super::*;

    fn entry<'a>(text: &'a str, other: &'a str) -> Entry<'a> {
        Entry {
            ts: UNIX_EPOCH + Duration::from_millis(1_764_482_403_007),
            request_id: other,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            client_ip: Some("203.0.113.7".parse().expect("ip")),
            method: text,
            host: text,
            path: text,
            route: Some(text),
            consumer: Some(other),
            upstream: None,
            target: Some(text),
            variant: Some("stable"),
            status: 200,
            bytes_sent: 12_345,
            duration_ms: 1.5,
            upstream_ms: None,
            cache: None,
            rate_limit: Some(other),
            error: Some(text),
        }
    }

    fn line(entry: &Entry<'_>) -> (String, Value) {
        let mut out = String::new();
        entry.write_json(&mut out);
        let value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        (out, value)
    }

    /// What a client can put in a path, a Host or any header the log shows.
    fn hostile() -> Vec<String> {
        let mut values: Vec<String> = [
            "",
            "plain",
            "\"",
            "\\",
            "\\\"",
            "\"},\"status\":500,\"x\":{\"",
            "line\nbreak\r\n{\"forged\":1}",
            "tab\there",
            "\u{0}\u{1}\u{7}\u{8}\u{b}\u{c}\u{1b}[31m\u{1f}\u{7f}",
            "\u{2028}\u{2029}mid\u{2028}end",
            "\u{2027}\u{202a}\u{e2}",
            "ünïcødé ✓ 🚀 \u{fffd}",
            "/api/%00%22%5c?q=\"x\"&y=\\",
            "</script><script>alert(1)</script>",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        values.push(String::from_utf8_lossy(b"bad \xff\xfe utf-8 \xe2\x80").into_owned());
        values.push((0u8..=0x7f).map(char::from).collect());
        values.push("\\".repeat(300) + &"\"".repeat(300));
        values
    }

    #[test]
    fn hostile_values_come_back_as_sent() {
        for text in hostile() {
            for other in ["req-1", text.as_str()] {
                let entry = entry(&text, other);
                let (out, value) = line(&entry);
                assert!(!out.contains('\n') && !out.contains('\r'), "{out}");
                assert!(
                    !out.contains('\u{2028}') && !out.contains('\u{2029}'),
                    "{out}"
                );
                for field in ["method", "host", "path", "route", "target", "error"] {
                    assert_eq!(value[field].as_str(), Some(text.as_str()), "{field}: {out}");
                }
                for field in ["request_id", "consumer", "rate_limit"] {
                    assert_eq!(value[field].as_str(), Some(other), "{field}: {out}");
                }
                let object = value.as_object().expect("an object");
                assert_eq!(object.len(), 19, "{out}");
            }
        }
    }

    #[test]
    fn every_field_is_written_as_serde_json_would() {
        let entry = entry("GET", "id-7");
        let (out, value) = line(&entry);
        assert_eq!(
            out,
            "{\"ts\":\"2025-11-30T06:00:03.007Z\",\"request_id\":\"id-7\",\
             \"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"client_ip\":\"203.0.113.7\",\
             \"method\":\"GET\",\"host\":\"GET\",\"path\":\"GET\",\"route\":\"GET\",\
             \"consumer\":\"id-7\",\"upstream\":null,\"target\":\"GET\",\"variant\":\"stable\",\
             \"status\":200,\"bytes_sent\":12345,\"duration_ms\":1.5,\"upstream_ms\":null,\
             \"cache\":null,\"rate_limit\":\"id-7\",\"error\":\"GET\"}"
        );
        assert_eq!(value["status"], 200);
        for (duration, upstream) in [
            (0.0, Some(0.000_123)),
            (123_456.789, Some(1e-9)),
            (f64::NAN, Some(f64::INFINITY)),
        ] {
            let entry = Entry {
                duration_ms: duration,
                upstream_ms: upstream,
                client_ip: Some("2001:db8::1".parse().expect("ip")),
                bytes_sent: usize::MAX,
                ..entry_with_defaults()
            };
            let (out, value) = line(&entry);
            let expected = |v: f64| serde_json::to_value(v).expect("a number");
            assert_eq!(value["duration_ms"], expected(duration), "{out}");
            assert_eq!(
                value["upstream_ms"],
                expected(upstream.unwrap_or(0.0)),
                "{out}"
            );
            assert_eq!(value["client_ip"], "2001:db8::1", "{out}");
            assert_eq!(
                value["bytes_sent"].as_u64(),
                Some(usize::MAX as u64),
                "{out}"
            );
        }
    }

    fn entry_with_defaults() -> Entry<'static> {
        Entry {
            client_ip: None,
            ..entry("GET", "id")
        }
    }

    #[test]
    fn timestamps_match_chrono() {
        let mut secs: Vec<u64> = vec![
            0,
            59,
            86_399,
            86_400,
            951_782_399,   // 2000-02-28T23:59:59
            951_868_800,   // 2000-03-01
            4_107_542_400, // 2100-03-01
            1_764_482_403,
            253_402_300_799, // 9999-12-31T23:59:59
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            secs.push(x % 253_402_300_800);
        }
        for secs in secs {
            for millis in [0, 7, 999] {
                let at = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis);
                let mut out = String::new();
                rfc3339::write(at, &mut out);
                let expected = chrono::DateTime::<chrono::Utc>::from(at)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                assert_eq!(out, expected);
            }
        }
        let mut out = String::new();
        rfc3339::write(UNIX_EPOCH - Duration::from_secs(5), &mut out);
        assert_eq!(out, "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn written_lines_lend_their_buffers_to_new_ones() {
        let dir =
            std::env::temp_dir().join(format!("portcullis-access-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("access.log");
        let dropped = IntGauge::new("dropped", "dropped").expect("gauge");
        let log = AccessLog::new(&path.display().to_string(), dropped);
        let receiver = log.receiver.lock().ok().and_then(|mut slot| slot.take());
        let receiver = receiver.expect("a receiver");
        let spare = Arc::clone(&log.spare);
        let hostile = hostile();
        for text in &hostile {
            log.write(&entry(text, "id"));
        }
        // The last sender gone, the writer drains the queue and returns.
        drop(log);
        let file = std::fs::File::create(&path).expect("log file");
        let sink: Box<dyn Write + Send> = Box::new(file);
        drain(
            receiver,
            BufWriter::new(sink),
            &AtomicBool::new(false),
            &spare,
        );
        // Every buffer but the one that grew past SPARE_CAPACITY (six fields of 600
        // escaped quotes and backslashes each) is kept for reuse.
        assert_eq!(spare.len(), hostile.len() - 1);
        assert!(spare.pop().is_some_and(|line| line.is_empty()));
        let text = std::fs::read_to_string(&path).expect("log");
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("JSON"))
            .collect();
        assert_eq!(lines.len(), hostile.len());
        for (line, text) in lines.iter().zip(&hostile) {
            assert_eq!(line["path"].as_str(), Some(text.as_str()));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
