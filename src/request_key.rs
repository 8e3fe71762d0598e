//! A request attribute used as a key: what keeps a canary user on one variant
//! (`routes[].canary.sticky_on`) and what `consistent_hash` hashes (`upstreams.NAME.hash_on`).

use http::HeaderName;
use pingora_http::RequestHeader;
use portcullis_plugins::auth::credentials::cookie_value;
use portcullis_plugins::PluginCtx;

/// `consumer | client_ip | header:NAME | cookie:NAME | jwt:CLAIM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKey {
    /// The authenticated consumer's id.
    Consumer,
    /// The client's IP address.
    ClientIp,
    /// A request header's value.
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// A claim of the JWT that authenticated the request.
    Claim(String),
}

impl RequestKey {
    /// Parses the configuration form; the error names the accepted forms.
    pub fn parse(key: &str) -> Result<Self, String> {
        match key.split_once(':') {
            None if key == "consumer" => Ok(Self::Consumer),
            None if key == "client_ip" => Ok(Self::ClientIp),
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                .map(Self::Header)
                .map_err(|_| format!("{name:?} is not a valid header name")),
            Some(("cookie", name)) if !name.is_empty() => Ok(Self::Cookie(name.to_string())),
            Some(("jwt", claim)) if !claim.is_empty() => Ok(Self::Claim(claim.to_string())),
            _ => Err(format!(
                "{key:?} is not one of consumer, client_ip, header:NAME, cookie:NAME, jwt:CLAIM"
            )),
        }
    }

    /// The key's bytes for this request, or `None` when the request does not carry it.
    /// A claim that is a JSON string gives its text; any other claim its JSON form.
    pub fn value(&self, req: &RequestHeader, ctx: &PluginCtx) -> Option<Vec<u8>> {
        match self {
            Self::Consumer => ctx.consumer.as_ref().map(|c| c.as_bytes().to_vec()),
            Self::ClientIp => ctx.client_ip.map(|ip| ip.to_string().into_bytes()),
            Self::Header(name) => req.headers.get(name).map(|v| v.as_bytes().to_vec()),
            Self::Cookie(name) => cookie_value(req, name).map(|v| v.as_bytes().to_vec()),
            Self::Claim(claim) => {
                let value = ctx.claims.as_ref()?.get(claim)?;
                Some(match value {
                    serde_json::Value::String(text) => text.as_bytes().to_vec(),
                    other => other.to_string().into_bytes(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse() {
        assert_eq!(RequestKey::parse("consumer"), Ok(RequestKey::Consumer));
        assert_eq!(
            RequestKey::parse("jwt:tenant"),
            Ok(RequestKey::Claim("tenant".into()))
        );
        assert!(RequestKey::parse("cookie:").is_err());
        assert!(RequestKey::parse("user").is_err());
    }
}
