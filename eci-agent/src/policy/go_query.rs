//! A form value as the engine's handlers read it: Go's `url.ParseQuery` and `Values.Get`, for
//! the routes whose purpose depends on the query (`POST /images/create`: a pull when
//! `fromImage` is set, an import when not).

/// The first value of `key` in `query` (the raw text after `?`), as `r.Form.Get(key)` returns
/// it when the request carries no form body (the sidecar removes a form `Content-Type` from
/// such routes): `None` when absent.
///
/// Pairs are split on `&` and, as Go before 1.17 did, on `;`: a current engine answers 400 for
/// any `;` (so the answer does not matter there), an older one split on it. A pair whose key or
/// value is not valid `QueryUnescape` text is skipped, as Go skips it (and the engine answers
/// 400).
pub fn form_value(query: &str, key: &str) -> Option<String> {
    query
        .split(['&', ';'])
        .filter(|pair| !pair.is_empty())
        .find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (query_unescape(k)?, query_unescape(v)?);
            (k == key).then_some(v)
        })
}

/// Go's `url.QueryUnescape`: `+` is a space, `%` must introduce two hex digits. Bytes that are
/// not UTF-8 are kept lossily (no key compared here has any).
fn query_unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16));
                let (hi, lo) = (hex(bytes.get(i + 1))?, hex(bytes.get(i + 2))?);
                out.push(u8::try_from(hi * 16 + lo).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_value_as_go_reads_it() {
        let get = |q| form_value(q, "fromImage");
        assert_eq!(get("fromImage=alpine&tag=1").as_deref(), Some("alpine"));
        assert_eq!(get("tag=1&fromImage=").as_deref(), Some(""));
        assert_eq!(get("fromImage").as_deref(), Some(""));
        assert_eq!(get("fromImage=&fromImage=alpine").as_deref(), Some(""));
        assert_eq!(get("fromSrc=-&repo=x"), None);
        assert_eq!(get(""), None);
        // Keys are unescaped and compared exactly.
        assert_eq!(get("from%49mage=a").as_deref(), Some("a"));
        assert_eq!(get("fromimage=a"), None);
        assert_eq!(get("fromImage=a+b%2Fc").as_deref(), Some("a b/c"));
        // A bad escape skips the pair (Go skips it and reports an error).
        assert_eq!(get("fromImage=%zz&fromImage=b").as_deref(), Some("b"));
        // `;` separated pairs, as older Go did.
        assert_eq!(get("tag=1;fromImage=").as_deref(), Some(""));
    }
}
