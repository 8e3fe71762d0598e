// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

use crate::*;
use bytes::Bytes;
use http::header;

#[derive(Debug, Clone)]
pub struct CaseHeaderName(Bytes);

impl CaseHeaderName {
    pub fn new(name: String) -> Self {
        CaseHeaderName(name.into())
    }
}

impl CaseHeaderName {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(buf: &[u8]) -> Self {
        CaseHeaderName(Bytes::copy_from_slice(buf))
    }
}

/// A trait that converts into case-sensitive header names.
pub trait IntoCaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName;

    /// The header name and its case-sensitive form. The default parses the case bytes;
    /// a [`HeaderName`] is already parsed and is kept as it is.
    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName)>
    where
        Self: Sized,
    {
        let case_header_name = self.into_case_header_name();
        let header_name = HeaderName::from_bytes(case_header_name.as_slice())
            .or_err(InvalidHTTPHeader, "invalid header name")?;
        Ok((header_name, case_header_name))
    }
}

impl IntoCaseHeaderName for CaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        self
    }
}

impl IntoCaseHeaderName for String {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for &'static str {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(&self))
    }

    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName)> {
        let case_header_name = CaseHeaderName(titled_header_name(&self));
        Ok((self, case_header_name))
    }
}

impl IntoCaseHeaderName for &HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(self))
    }

    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName)> {
        Ok((self.clone(), CaseHeaderName(titled_header_name(self))))
    }
}

/// A parsed name with the bytes to write it as, both made once by the caller (e.g.
/// `(HeaderName::from_static("x-request-id"), Bytes::from_static(b"X-Request-Id"))`): an
/// insert neither parses the name again nor copies it. The bytes must spell the name.
impl IntoCaseHeaderName for (HeaderName, Bytes) {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.1)
    }

    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName)> {
        debug_assert!(self.0.as_str().as_bytes().eq_ignore_ascii_case(&self.1));
        Ok((self.0, CaseHeaderName(self.1)))
    }
}

impl IntoCaseHeaderName for Bytes {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self)
    }
}

fn titled_header_name(header_name: &HeaderName) -> Bytes {
    titled_header_name_str(header_name).map_or_else(
        || Bytes::copy_from_slice(header_name.as_str().as_bytes()),
        |s| Bytes::from_static(s.as_bytes()),
    )
}

pub(crate) fn titled_header_name_str(header_name: &HeaderName) -> Option<&'static str> {
    Some(match *header_name {
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::AGE => "Age",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONNECTION => "Connection",
        header::CONTENT_TYPE => "Content-Type",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CONTENT_LENGTH => "Content-Length",
        header::DATE => "Date",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::HOST => "Host",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        // TODO: add more const header here to map to their titled case
        // TODO: automatically upper case the first letter?
        _ => {
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_case_header_name() {
        assert_eq!("FoO".into_case_header_name().as_slice(), b"FoO");
        assert_eq!("FoO".to_string().into_case_header_name().as_slice(), b"FoO");
        assert_eq!(header::SERVER.into_case_header_name().as_slice(), b"Server");
    }

    #[test]
    fn header_names_are_kept_not_parsed_again() {
        let (name, case) = header::SERVER.into_header_names().unwrap();
        assert_eq!((name, case.as_slice()), (header::SERVER, &b"Server"[..]));

        let custom = HeaderName::from_static("x-request-id");
        let (name, case) = (&custom).into_header_names().unwrap();
        assert_eq!((name, case.as_slice()), (custom.clone(), &b"x-request-id"[..]));

        let spelled = (custom.clone(), Bytes::from_static(b"X-Request-Id"));
        let (name, case) = spelled.into_header_names().unwrap();
        assert_eq!((name, case.as_slice()), (custom, &b"X-Request-Id"[..]));

        let (name, case) = "X-Trace".into_header_names().unwrap();
        assert_eq!((name.as_str(), case.as_slice()), ("x-trace", &b"X-Trace"[..]));
        assert!("bad name".into_header_names().is_err());
    }

    #[test]
    fn an_insert_by_spelled_name_writes_that_spelling() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let name = HeaderName::from_static("x-forwarded-for");
        req.insert_header((name.clone(), Bytes::from_static(b"X-Forwarded-For")), "1.2.3.4")
            .unwrap();
        req.append_header((name.clone(), Bytes::from_static(b"x-forwarded-for")), "5.6.7.8")
            .unwrap();
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        assert_eq!(
            wire,
            b"X-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 5.6.7.8\r\n".to_vec()
        );
        assert_eq!(req.headers.get_all(&name).iter().count(), 2);
    }
}
