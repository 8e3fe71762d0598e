//! Exchanges with the gateway kept for httplint (REDbot's linter; `pip install httplint`,
//! see scripts/setup-debian.sh): each answer is parsed for the test's assertions and
//! linted, with all others of the test, when the test ends; anything BAD fails the test.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::thread;

use base64::Engine;

use super::{raw_exchange_bytes, Gateway};

/// One answer as the client received it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Lower-case names, values as sent.
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }

    /// The names every `Vary` field lists, lower case.
    pub fn vary(&self) -> BTreeSet<String> {
        self.fields
            .iter()
            .filter(|(name, _)| name == "vary")
            .flat_map(|(_, value)| value.split(','))
            .map(|name| name.trim().to_ascii_lowercase())
            .collect()
    }
}

/// The exchanges of a test, linted together when it is dropped (one httplint process).
#[derive(Default)]
pub struct Exchanges(RefCell<Vec<serde_json::Value>>);

impl Exchanges {
    /// Sends `method path` with `headers` on a connection of its own, keeps the raw answer
    /// for httplint, and returns it.
    pub fn ask(
        &self,
        gateway: &Gateway,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: example.test\r\n");
        for (name, value) in headers {
            request += &format!("{name}: {value}\r\n");
        }
        request += "Connection: close\r\n\r\n";
        let raw = raw_exchange_bytes(&gateway.addr(), request.as_bytes());
        let fields: Vec<String> = headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
        self.0.borrow_mut().push(serde_json::json!({
            "method": method,
            "target": path,
            "fields": fields,
            "response": base64::engine::general_purpose::STANDARD.encode(&raw),
            "time": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |since| since.as_secs_f64()),
        }));
        parse(&raw)
    }
}

impl Drop for Exchanges {
    fn drop(&mut self) {
        if !thread::panicking() {
            lint(&self.0.borrow());
        }
    }
}

fn parse(raw: &[u8]) -> Answer {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head}"));
    let fields = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect::<Vec<_>>();
    let mut body = raw[split + 4..].to_vec();
    if fields
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value == "chunked")
    {
        body = dechunk(&body);
    }
    Answer {
        status,
        fields,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..line_end])
            .ok()
            .and_then(|line| usize::from_str_radix(line.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
    out
}

/// Fails the test when httplint finds anything BAD in an answer, as the answer to its
/// request.
fn lint(exchanges: &[serde_json::Value]) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/tools/httplint_response.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); scripts/setup-debian.sh"));
    let input = serde_json::to_vec(exchanges).expect("JSON");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("hand the answers to httplint");
    let output = child.wait_with_output().expect("httplint ran");
    let notes = String::from_utf8_lossy(&output.stdout);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        !errors.contains("ModuleNotFoundError"),
        "httplint is not installed: pip install httplint (scripts/setup-debian.sh)"
    );
    assert!(
        output.status.success(),
        "httplint finds answers BAD:\n{notes}{errors}"
    );
}
