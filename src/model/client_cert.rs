//! Client certificates on TLS listeners (`listeners[].tls.client_auth`), compiled: the CA
//! bundle and revocation lists read and checked at load, the verification each handshake
//! applies, and the verified certificate as the connection carries it (the identity the
//! `mtls` plugin reads, the headers the upstream receives).

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use openssl::hash::MessageDigest;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{CrlStatus, X509Crl, X509NameRef, X509Ref, X509VerifyResult, X509};
use pingora::protocols::tls::TlsRef;
use pingora::tls::error::ErrorStack;
use pingora::tls::ssl::SslVerifyMode;
use pingora_http::RequestHeader;
use portcullis_plugins::ClientCertificate;

use crate::config::{ClientAuthConfig, ClientAuthMode, ClientCertHeadersConfig, Problem};

/// The header that marks a mirrored request (`routes[].mirror`).
pub const MIRROR_HEADER: &str = "x-portcullis-mirror";

/// The default header names, always removed from client requests.
pub const DEFAULT_HEADERS: [&str; 3] = [
    "x-client-cert-subject",
    "x-client-cert-sans",
    "x-client-cert-sha256",
];

/// The headers only the gateway sets, removed from every client request on every
/// listener: each client-certificate header name of a configuration (the defaults and
/// each listener's own), and the mark of mirrored requests.
pub fn reserved_headers<'a>(listeners: impl Iterator<Item = &'a ClientAuth>) -> Box<[HeaderName]> {
    let mut names: Vec<HeaderName> = DEFAULT_HEADERS
        .iter()
        .chain([&MIRROR_HEADER])
        .map(|name| HeaderName::from_static(name))
        .collect();
    for auth in listeners {
        for name in auth.headers().names() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names.into()
}

/// The names of the headers that carry a verified certificate upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertHeaders {
    subject: HeaderName,
    sans: HeaderName,
    sha256: HeaderName,
}

impl ClientCertHeaders {
    /// The three names, in the order subject, SANs, fingerprint.
    pub fn names(&self) -> [&HeaderName; 3] {
        [&self.subject, &self.sans, &self.sha256]
    }
}

/// `listeners[].tls.client_auth`, compiled.
pub struct ClientAuth {
    cas: Vec<X509>,
    mode: ClientAuthMode,
    crls: Arc<[X509Crl]>,
    headers: Arc<ClientCertHeaders>,
}

impl ClientAuth {
    /// Reads the CA bundle and the revocation lists of `config` (at `path`).
    pub fn compile(config: &ClientAuthConfig, path: &str) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let headers = compile_headers(&config.headers, &format!("{path}.headers"))
            .map_err(|more| problems.extend(more))
            .ok();
        let cas = read_certificates(&config.ca, &format!("{path}.ca"))
            .map_err(|problem| problems.push(problem))
            .ok();
        let crls = match (&config.crl, &cas) {
            (Some(file), Some(cas)) => read_crls(file, cas, &format!("{path}.crl"))
                .map_err(|problem| problems.push(problem))
                .ok(),
            _ => Some(Vec::new()),
        };
        match (headers, cas, crls) {
            (Some(headers), Some(cas), Some(crls)) if problems.is_empty() => Ok(Self {
                cas,
                mode: config.mode,
                crls: crls.into(),
                headers: Arc::new(headers),
            }),
            _ => Err(problems),
        }
    }

    /// The names of the headers that carry the certificate upstream.
    pub fn headers(&self) -> &ClientCertHeaders {
        &self.headers
    }

    /// Asks the client of this handshake for a certificate and verifies it against the
    /// CA bundle and the revocation lists in force. A certificate that fails verification
    /// fails the handshake in both modes; in `required` mode so does its absence.
    pub fn request_certificate(&self, ssl: &mut TlsRef) -> Result<(), ErrorStack> {
        // A store of its own per handshake: the CA certificates are reference-counted, so
        // this costs a few small allocations beside the handshake's key exchange.
        let mut store = X509StoreBuilder::new()?;
        for ca in &self.cas {
            store.add_cert(ca.clone())?;
            ssl.add_client_ca(ca)?;
        }
        ssl.set_verify_cert_store(store.build())?;
        let mode = match self.mode {
            ClientAuthMode::Required => SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            ClientAuthMode::Optional => SslVerifyMode::PEER,
        };
        if self.crls.is_empty() {
            ssl.set_verify(mode);
            return Ok(());
        }
        let crls = Arc::clone(&self.crls);
        ssl.set_verify_callback(mode, move |chain_ok, context| {
            if !chain_ok || context.error_depth() != 0 {
                return chain_ok;
            }
            let revoked = context
                .current_cert()
                .is_some_and(|cert| is_revoked(&crls, cert));
            if revoked {
                context.set_error(X509VerifyResult::APPLICATION_VERIFICATION);
            }
            !revoked
        });
        Ok(())
    }

    /// The certificate the client of a finished handshake presented, when verification
    /// accepted it.
    pub fn verified(&self, ssl: &TlsRef) -> Option<VerifiedClient> {
        if ssl.verify_result() != X509VerifyResult::OK {
            return None;
        }
        let cert = ssl.peer_certificate()?;
        VerifiedClient::new(&cert, Arc::clone(&self.headers))
    }
}

/// A verified client certificate, computed once per connection: the identity plugins
/// read and the header values sent upstream with each of its requests.
pub struct VerifiedClient {
    /// Subject, SANs and fingerprint.
    pub certificate: Arc<ClientCertificate>,
    headers: Arc<ClientCertHeaders>,
    values: [HeaderValue; 3],
}

impl VerifiedClient {
    fn new(cert: &X509Ref, headers: Arc<ClientCertHeaders>) -> Option<Self> {
        let digest = cert.digest(MessageDigest::sha256()).ok()?;
        let sha256: [u8; 32] = digest.as_ref().try_into().ok()?;
        let certificate = ClientCertificate {
            subject: rfc2253(cert.subject_name()),
            sans: alternative_names(cert),
            sha256,
        };
        let values = [
            header_value(&certificate.subject),
            header_value(&certificate.sans.join(", ")),
            header_value(&hex(&sha256)),
        ];
        Some(Self {
            certificate: Arc::new(certificate),
            headers,
            values,
        })
    }

    /// Adds the certificate's headers to a request bound upstream.
    pub fn add_headers(&self, req: &mut RequestHeader) {
        for (name, value) in self.headers.names().into_iter().zip(&self.values) {
            // Names and values were checked when compiled; insertion cannot fail.
            let _ = req.insert_header(name.clone(), value.clone());
        }
    }
}

fn compile_headers(
    config: &ClientCertHeadersConfig,
    path: &str,
) -> Result<ClientCertHeaders, Vec<Problem>> {
    let name = |value: &str, field: &str| {
        HeaderName::from_bytes(value.as_bytes()).map_err(|_| {
            Problem::new(
                format!("{path}.{field}"),
                format!("{value:?} is not a valid header name"),
            )
        })
    };
    match (
        name(&config.subject, "subject"),
        name(&config.sans, "sans"),
        name(&config.sha256, "sha256"),
    ) {
        (Ok(subject), Ok(sans), Ok(sha256)) => Ok(ClientCertHeaders {
            subject,
            sans,
            sha256,
        }),
        (subject, sans, sha256) => Err([subject.err(), sans.err(), sha256.err()]
            .into_iter()
            .flatten()
            .collect()),
    }
}

/// Every certificate of a PEM file; a file with none (or not PEM) is a problem at `at`.
pub fn read_certificates(file: &str, at: &str) -> Result<Vec<X509>, Problem> {
    let pem =
        std::fs::read(file).map_err(|e| Problem::new(at, format!("cannot read {file}: {e}")))?;
    match X509::stack_from_pem(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        _ => Err(Problem::new(
            at,
            format!("{file}: no PEM certificate in it"),
        )),
    }
}

const CRL_BEGIN: &str = "-----BEGIN X509 CRL-----";

/// The revocation lists of a PEM file, each signed by one of `cas`.
fn read_crls(file: &str, cas: &[X509], at: &str) -> Result<Vec<X509Crl>, Problem> {
    let pem = std::fs::read_to_string(file)
        .map_err(|e| Problem::new(at, format!("cannot read {file}: {e}")))?;
    let mut crls = Vec::new();
    for block in pem.split(CRL_BEGIN).skip(1) {
        let crl = X509Crl::from_pem(format!("{CRL_BEGIN}{block}").as_bytes())
            .map_err(|_| Problem::new(at, format!("{file}: a CRL in it is not valid PEM")))?;
        let signed = cas.iter().any(|ca| {
            ca.public_key()
                .is_ok_and(|key| crl.verify(&key).unwrap_or(false))
        });
        if !signed {
            return Err(Problem::new(
                at,
                format!("{file}: a CRL in it is not signed by a CA of `ca`"),
            ));
        }
        crls.push(crl);
    }
    if crls.is_empty() {
        return Err(Problem::new(at, format!("{file}: no PEM CRL in it")));
    }
    Ok(crls)
}

fn is_revoked(crls: &[X509Crl], cert: &X509Ref) -> bool {
    let cert = cert.to_owned();
    crls.iter()
        .any(|crl| matches!(crl.get_by_cert(&cert), CrlStatus::Revoked(_)))
}

/// A distinguished name in RFC 2253 form: last RDN first, `,` between, special
/// characters escaped (`CN=client\, inc.,O=Acme`).
pub fn rfc2253(name: &X509NameRef) -> String {
    let entries: Vec<_> = name.entries().collect();
    let mut out = String::new();
    for entry in entries.iter().rev() {
        if !out.is_empty() {
            out.push(',');
        }
        let nid = entry.object().nid();
        match nid.short_name() {
            Ok(short) if nid != openssl::nid::Nid::UNDEF => out.push_str(short),
            _ => out.push_str(&entry.object().to_string()),
        }
        out.push('=');
        let value = entry.data().to_string().unwrap_or_default();
        escape_dn_value(&value, &mut out);
    }
    out
}

fn escape_dn_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let edge_space = c == ' ' && (i == 0 || i == last);
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || edge_space
            || (i == 0 && c == '#')
        {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The subject alternative names, as `DNS:name`, `IP:addr`, `URI:uri`, `email:addr`.
fn alternative_names(cert: &X509Ref) -> Vec<String> {
    let Some(names) = cert.subject_alt_names() else {
        return Vec::new();
    };
    names
        .iter()
        .filter_map(|name| {
            if let Some(dns) = name.dnsname() {
                Some(format!("DNS:{dns}"))
            } else if let Some(uri) = name.uri() {
                Some(format!("URI:{uri}"))
            } else if let Some(email) = name.email() {
                Some(format!("email:{email}"))
            } else {
                name.ipaddress()
                    .and_then(ip_text)
                    .map(|ip| format!("IP:{ip}"))
            }
        })
        .collect()
}

fn ip_text(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(Into::into),
        16 => <[u8; 16]>::try_from(bytes).ok().map(Into::into),
        _ => None,
    }
}

/// A header value for text taken from a certificate: control characters (which a header
/// cannot carry) are written as `\xHH`.
fn header_value(text: &str) -> HeaderValue {
    let mut clean = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_control() {
            clean.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            clean.push(c);
        }
    }
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::x509::X509NameBuilder;

    #[test]
    fn names_print_last_rdn_first_with_specials_escaped() {
        let mut name = X509NameBuilder::new().expect("builder");
        name.append_entry_by_text("C", "DE").expect("C");
        name.append_entry_by_text("O", "Acme, Inc.").expect("O");
        name.append_entry_by_text("CN", " client+1").expect("CN");
        let name = name.build();
        assert_eq!(rfc2253(&name), "CN=\\ client\\+1,O=Acme\\, Inc.,C=DE");
    }

    #[test]
    fn control_characters_never_reach_a_header() {
        assert_eq!(header_value("a\r\nb").to_str().ok(), Some("a\\x0d\\x0ab"));
    }
}
