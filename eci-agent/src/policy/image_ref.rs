//! Image references, parsed and normalised the way `distribution/reference` does
//! (`ParseNormalizedNamed` + `ParseDockerRef`), and the imageList entry built on them.
//!
//! The grammar is hand-written rather than regex-driven so that every rejection has a precise
//! reason and no input can make it panic (a proptest below feeds it arbitrary strings).

use std::{fmt, str::FromStr};

/// Docker Hub's name in references; `index.docker.io` is its legacy alias.
pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
pub const DEFAULT_TAG: &str = "latest";
/// `RepositoryNameTotalLengthMax`: the limit is on the path, not the domain.
const MAX_PATH_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// Why a string is not a valid image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// Nothing to parse.
    #[error("empty image reference")]
    Empty,
    /// `distribution/reference` refuses a bare 64-hex string as a repository name.
    #[error("a bare 64-character hex string is an image ID, not a repository name")]
    BareIdentifier,
    /// The domain part (`host[:port]`) does not follow the grammar.
    #[error("invalid registry host {0:?}")]
    InvalidDomain(String),
    /// The repository path has uppercase letters (`ErrNameContainsUppercase`).
    #[error("repository name must be lowercase")]
    Uppercase,
    /// A path component is empty or uses a separator the grammar does not allow.
    #[error("invalid repository path component {0:?}")]
    InvalidPathComponent(String),
    /// The path is longer than 255 characters.
    #[error("repository name must not be longer than {MAX_PATH_LEN} characters")]
    NameTooLong,
    /// The tag is not `[\w][\w.-]{0,127}`.
    #[error("invalid tag {0:?}")]
    InvalidTag(String),
    /// The digest is malformed or uses another algorithm than sha256.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// Wildcards other than a whole `*` or a `:*` tag.
    #[error("wildcards are only supported as the whole entry (\"*\") or as the tag (\"name:*\")")]
    UnsupportedWildcard,
}

/// Why a string is not a valid digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// No `algorithm:` prefix.
    #[error("digest {0:?} has no algorithm prefix (expected sha256:<64 hex>)")]
    MissingAlgorithm(String),
    /// Only sha256 is used by registries and the engine for image content.
    #[error("unsupported digest algorithm {0:?} (only sha256 is supported)")]
    UnsupportedAlgorithm(String),
    /// The encoded part is not 64 lowercase hex characters.
    #[error("invalid sha256 digest value {0:?} (expected 64 lowercase hex characters)")]
    InvalidHex(String),
}

/// A content digest; always sha256 (the only algorithm registries and the engine use for images).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex characters, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for b in self.0 {
            out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            out.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
        }
        out
    }

    /// Parses exactly 64 lowercase hex characters (go-digest's anchored sha256 encoding).
    pub fn from_hex(hex: &str) -> Result<Self, DigestError> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return Err(DigestError::InvalidHex(hex.to_owned()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi =
                lower_hex_value(pair[0]).ok_or_else(|| DigestError::InvalidHex(hex.to_owned()))?;
            let lo =
                lower_hex_value(pair[1]).ok_or_else(|| DigestError::InvalidHex(hex.to_owned()))?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Self(out))
    }
}

fn lower_hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(DigestError::MissingAlgorithm(s.to_owned()));
        };
        if algorithm != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm(algorithm.to_owned()));
        }
        Self::from_hex(hex)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A fully-qualified repository name: `docker.io/library/docker`, `127.0.0.1:5000/team/app`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName {
    domain: String,
    path: String,
}

impl RepoName {
    /// Registry host and optional port, e.g. `docker.io`, `localhost:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry, e.g. `library/docker`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The short form Docker prints (`FamiliarName`): `docker`, `team/app`, `localhost/x`.
    pub fn familiar(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.to_string();
        }
        match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
            Some(rest) if !rest.contains('/') => rest.to_owned(),
            _ => self.path.clone(),
        }
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoName({self})")
    }
}

/// A tag, validated against `[\w][\w.-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn latest() -> Self {
        Self(DEFAULT_TAG.to_owned())
    }
}

impl FromStr for Tag {
    type Err = RefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let bytes = s.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= MAX_TAG_LEN
            && word(bytes[0])
            && bytes[1..]
                .iter()
                .all(|&c| word(c) || c == b'.' || c == b'-');
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(RefError::InvalidTag(s.to_owned()))
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A normalised reference: name plus optional tag and digest, as `ParseNormalizedNamed` returns.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ImageRef {
    pub name: RepoName,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// `ParseNormalizedNamed`: accepts familiar forms (`docker:cli`) and fills in `docker.io`
    /// and `library/`; does not add a default tag.
    pub fn parse(s: &str) -> Result<Self, RefError> {
        parse_normalized(s)
    }

    /// `ParseDockerRef`: a digest wins over a tag, and a bare name gets `latest`.
    pub fn parse_docker_ref(s: &str) -> Result<Self, RefError> {
        let mut r = parse_normalized(s)?;
        if r.digest.is_some() {
            r.tag = None;
        } else if r.tag.is_none() {
            r.tag = Some(Tag::latest());
        }
        Ok(r)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = RefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// What the engine accepts where it takes "an image": a name, or an image ID
/// (`ParseAnyReference`: `sha256:<hex>` or a bare 64-hex string).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum AnyReference {
    Named(ImageRef),
    Id(Digest),
}

impl AnyReference {
    pub fn parse(s: &str) -> Result<Self, RefError> {
        if let Ok(d) = Digest::from_hex(s) {
            return Ok(Self::Id(d));
        }
        if let Some(hex) = s.strip_prefix("sha256:") {
            return Ok(Self::Id(Digest::from_hex(hex)?));
        }
        ImageRef::parse(s).map(Self::Named)
    }
}

/// One `imageList.images` entry.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum ImagePattern {
    /// `"*"`: every image may mount the socket.
    Any,
    /// `name:*`: any tag of that repository, digests resolved from the registry's tag list.
    AnyTag(RepoName),
    /// `name[:tag]`: one tag (default `latest`), resolved to digests from the registry.
    Tag(RepoName, Tag),
    /// `name@sha256:…`: exactly this digest; needs no registry lookup.
    Digest(RepoName, Digest),
}

impl ImagePattern {
    pub fn parse(s: &str) -> Result<Self, RefError> {
        if s == "*" {
            return Ok(Self::Any);
        }
        if let Some(name) = s.strip_suffix(":*") {
            let r = parse_normalized(name)?;
            if r.tag.is_some() || r.digest.is_some() || name.contains('*') {
                return Err(RefError::UnsupportedWildcard);
            }
            return Ok(Self::AnyTag(r.name));
        }
        if s.contains('*') {
            return Err(RefError::UnsupportedWildcard);
        }
        let r = parse_normalized(s)?;
        Ok(match (r.digest, r.tag) {
            // The docs: only the image that matches that name and digest; a tag is decoration.
            (Some(d), _) => Self::Digest(r.name, d),
            (None, Some(t)) => Self::Tag(r.name, t),
            (None, None) => Self::Tag(r.name, Tag::latest()),
        })
    }

    /// The repository this entry names (none for `"*"`).
    pub fn repo(&self) -> Option<&RepoName> {
        match self {
            Self::Any => None,
            Self::AnyTag(n) | Self::Tag(n, _) | Self::Digest(n, _) => Some(n),
        }
    }
}

impl fmt::Display for ImagePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::AnyTag(n) => write!(f, "{n}:*"),
            Self::Tag(n, t) => write!(f, "{n}:{t}"),
            Self::Digest(n, d) => write!(f, "{n}@{d}"),
        }
    }
}

impl FromStr for ImagePattern {
    type Err = RefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn parse_normalized(s: &str) -> Result<ImageRef, RefError> {
    if s.is_empty() {
        return Err(RefError::Empty);
    }
    if s.len() == 64 && s.bytes().all(|c| lower_hex_value(c).is_some()) {
        return Err(RefError::BareIdentifier);
    }
    let (domain, remainder) = split_docker_domain(s);
    // The lowercase check looks only at the name before the tag, as the Go code does.
    let remote_name = remainder
        .split_once(':')
        .map_or(remainder.as_str(), |(n, _)| n);
    let remote_name = remote_name.split_once('@').map_or(remote_name, |(n, _)| n);
    if remote_name.bytes().any(|c| c.is_ascii_uppercase()) {
        return Err(RefError::Uppercase);
    }
    validate_domain(domain)?;

    let (rest, digest) = match remainder.split_once('@') {
        Some((rest, d)) => (rest, Some(parse_reference_digest(d)?)),
        None => (remainder.as_str(), None),
    };
    let (path, tag) = match rest.rsplit_once(':') {
        // A ':' inside the path part would be a port, but the domain is already split off.
        Some((path, tag)) => (path, Some(tag.parse::<Tag>()?)),
        None => (rest, None),
    };
    validate_path(path)?;
    Ok(ImageRef {
        name: RepoName {
            domain: domain.to_owned(),
            path: path.to_owned(),
        },
        tag,
        digest,
    })
}

/// `splitDockerDomain`: the first element is a host only when it looks like one.
fn split_docker_domain(name: &str) -> (&str, String) {
    let (mut domain, remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DEFAULT_DOMAIN, name),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN;
    }
    let remainder = if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{remainder}")
    } else {
        remainder.to_owned()
    };
    (domain, remainder)
}

/// `host[:port]` where host is a DNS name / IPv4 (`[a-zA-Z0-9-]` components) or `[ipv6]`.
fn validate_domain(domain: &str) -> Result<(), RefError> {
    let bad = || RefError::InvalidDomain(domain.to_owned());
    let (host, port) = if let Some(after_bracket) = domain.strip_prefix('[') {
        let (inside, rest) = after_bracket.split_once(']').ok_or_else(bad)?;
        if inside.is_empty() || !inside.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return Err(bad());
        }
        let port = match rest {
            "" => None,
            _ => Some(rest.strip_prefix(':').ok_or_else(bad)?),
        };
        (None, port)
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|c| c.is_ascii_digit()))
    {
        return Err(bad());
    }
    if let Some(host) = host {
        let component_ok = |c: &str| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        };
        if !host.split('.').all(component_ok) {
            return Err(bad());
        }
    }
    Ok(())
}

/// Path components are `[a-z0-9]+` joined by one `.`, one or two `_`, or any run of `-`.
fn validate_path(path: &str) -> Result<(), RefError> {
    if path.len() > MAX_PATH_LEN {
        return Err(RefError::NameTooLong);
    }
    for component in path.split('/') {
        if !path_component_ok(component) {
            return Err(RefError::InvalidPathComponent(component.to_owned()));
        }
    }
    Ok(())
}

fn path_component_ok(c: &str) -> bool {
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// The reference grammar admits any `alg:hex{32,}`; go-digest then refuses what it cannot verify.
fn parse_reference_digest(s: &str) -> Result<Digest, DigestError> {
    let Some((algorithm, hex)) = s.split_once(':') else {
        return Err(DigestError::MissingAlgorithm(s.to_owned()));
    };
    let alg_ok = !algorithm.is_empty()
        && algorithm.as_bytes()[0].is_ascii_alphabetic()
        && algorithm
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_+.".contains(&c));
    if !alg_ok || algorithm != "sha256" {
        return Err(DigestError::UnsupportedAlgorithm(algorithm.to_owned()));
    }
    Digest::from_hex(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "1a3f5e7d9b1a3f5e7d9b1a3f5e7d9b1a3f5e7d9b1a3f5e7d9b1a3f5e7d9b1a3f";

    #[test]
    fn normalises_like_distribution_reference() {
        let cases: &[(&str, &str)] = &[
            ("docker:cli", "docker.io/library/docker:cli"),
            ("docker", "docker.io/library/docker"),
            ("ubuntu:22.04", "docker.io/library/ubuntu:22.04"),
            ("foo/bar", "docker.io/foo/bar"),
            ("docker.io/ubuntu", "docker.io/library/ubuntu"),
            ("index.docker.io/x", "docker.io/library/x"),
            ("index.docker.io/a/b", "docker.io/a/b"),
            ("localhost/debian", "localhost/debian"),
            ("localhost:5000/debian:1", "localhost:5000/debian:1"),
            ("LOCALDOMAIN/debian", "LOCALDOMAIN/debian"),
            ("127.0.0.1:5000/debian", "127.0.0.1:5000/debian"),
            ("[fc00::1]:5000/docker", "[fc00::1]:5000/docker"),
            ("localhost", "docker.io/library/localhost"),
            ("example.com", "docker.io/library/example.com"),
            ("192.168.0.1:80", "docker.io/library/192.168.0.1:80"),
            ("docker---rules/docker", "docker.io/docker---rules/docker"),
            ("dock__er/docker", "docker.io/dock__er/docker"),
            (
                "lowercase:Uppercase",
                "docker.io/library/lowercase:Uppercase",
            ),
            ("Docker/docker", "Docker/docker"),
            ("a/b/c/d", "docker.io/a/b/c/d"),
            ("ghcr.io/owner/app:v1.2", "ghcr.io/owner/app:v1.2"),
            (
                "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
                "docker.io/library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
            ),
        ];
        for (input, want) in cases {
            let got = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(got.to_string(), *want, "input {input}");
        }
        let with_host = format!("docker.io/{HEX}");
        assert_eq!(
            ImageRef::parse(&with_host).unwrap().to_string(),
            format!("docker.io/library/{HEX}")
        );
    }

    #[test]
    fn rejects_invalid_references() {
        let long_path = "a".repeat(256);
        let cases: &[&str] = &[
            "",
            "https://github.com/docker/docker",
            "docker///docker",
            "-docker",
            "docker-/docker",
            "____/____",
            "dock..er/docker",
            "dock_.er/docker",
            "[fc00::1]:5000",
            "fc00::1:5000/debian",
            "[fe80::1%eth0]:5000/debian",
            "Uppercase:tag",
            "test:5000/Uppercase/lowercase:tag",
            "docker.io/docker/Docker",
            HEX,
            "a:b:c",
            "name:",
            "name:-tag",
            "name@sha256:abc",
            "name@sha512:abc",
            "name@md5:0123456789abcdef0123456789abcdef",
            &long_path,
            "host:/x",
            "host:abc/x",
            "-host.com/x",
        ];
        for input in cases {
            assert!(
                ImageRef::parse(input).is_err(),
                "{input:?} should be invalid"
            );
        }
        let uppercase_hex = format!("x@sha256:{}", HEX.to_uppercase());
        assert!(ImageRef::parse(&uppercase_hex).is_err());
    }

    #[test]
    fn docker_ref_defaults_latest_and_drops_tag_when_digest() {
        assert_eq!(
            ImageRef::parse_docker_ref("busybox").unwrap().to_string(),
            "docker.io/library/busybox:latest"
        );
        let s = format!("busybox:latest@sha256:{HEX}");
        assert_eq!(
            ImageRef::parse_docker_ref(&s).unwrap().to_string(),
            format!("docker.io/library/busybox@sha256:{HEX}")
        );
    }

    #[test]
    fn image_patterns() {
        let d: Digest = format!("sha256:{HEX}").parse().unwrap();
        let name = |s: &str| ImageRef::parse(s).unwrap().name;
        let cases: Vec<(String, ImagePattern)> = vec![
            ("*".into(), ImagePattern::Any),
            (
                "docker:cli".into(),
                ImagePattern::Tag(name("docker"), "cli".parse().unwrap()),
            ),
            (
                "docker".into(),
                ImagePattern::Tag(name("docker"), Tag::latest()),
            ),
            (
                "docker.io/localstack/localstack:*".into(),
                ImagePattern::AnyTag(name("localstack/localstack")),
            ),
            (
                "localhost:5000/x:*".into(),
                ImagePattern::AnyTag(name("localhost:5000/x")),
            ),
            (
                format!("alpine@sha256:{HEX}"),
                ImagePattern::Digest(name("alpine"), d),
            ),
            (
                format!("alpine:3@sha256:{HEX}"),
                ImagePattern::Digest(name("alpine"), d),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(ImagePattern::parse(&input).unwrap(), want, "{input}");
        }
        for bad in [
            "**",
            "testcontainers/*:*",
            "x:1:*",
            "*:*",
            "x:*@sha256:00",
            "a*",
            "x:t*",
        ] {
            assert!(
                ImagePattern::parse(bad).is_err(),
                "{bad:?} should be invalid"
            );
        }
        assert_eq!(
            ImagePattern::parse("docker:*").unwrap().to_string(),
            "docker.io/library/docker:*"
        );
    }

    #[test]
    fn any_reference_takes_ids() {
        let d: Digest = format!("sha256:{HEX}").parse().unwrap();
        assert_eq!(AnyReference::parse(HEX).unwrap(), AnyReference::Id(d));
        assert_eq!(
            AnyReference::parse(&format!("sha256:{HEX}")).unwrap(),
            AnyReference::Id(d)
        );
        assert!(matches!(
            AnyReference::parse("alpine").unwrap(),
            AnyReference::Named(_)
        ));
    }

    #[test]
    fn digest_round_trip_and_familiar() {
        let s = format!("sha256:{HEX}");
        assert_eq!(s.parse::<Digest>().unwrap().to_string(), s);
        assert!("sha256:".parse::<Digest>().is_err());
        assert!(HEX.parse::<Digest>().is_err());
        assert_eq!(
            ImageRef::parse("docker:cli").unwrap().name.familiar(),
            "docker"
        );
        assert_eq!(
            ImageRef::parse("foo/bar").unwrap().name.familiar(),
            "foo/bar"
        );
        assert_eq!(
            ImageRef::parse("localhost/x").unwrap().name.familiar(),
            "localhost/x"
        );
    }

    mod prop {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn never_panics(s in "\\PC{0,80}") {
                let _ = ImageRef::parse(&s);
                let _ = ImagePattern::parse(&s);
                let _ = AnyReference::parse(&s);
                let _ = s.parse::<Digest>();
            }

            #[test]
            fn never_panics_on_reference_like(s in "[a-zA-Z0-9./:@_*\\[\\]-]{0,70}") {
                let _ = ImagePattern::parse(&s);
                if let Ok(r) = ImageRef::parse(&s) {
                    // Normalisation is idempotent: the canonical form parses to itself.
                    let again = ImageRef::parse(&r.to_string()).expect("canonical form re-parses");
                    prop_assert_eq!(again, r);
                }
            }

            #[test]
            fn valid_names_round_trip(
                host in prop::option::of("[a-z0-9]{1,8}\\.[a-z]{2,4}(:[0-9]{1,5})?"),
                // A first component with a dot would be taken for a host, as in Go.
                path in "[a-z0-9]{1,6}(__?[a-z0-9]{1,6}|-+[a-z0-9]{1,6}){0,2}(/[a-z0-9]{1,6}([._-][a-z0-9]{1,6})?){0,2}",
                tag in prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}"),
            ) {
                let mut s = String::new();
                if let Some(h) = &host { s.push_str(h); s.push('/'); }
                s.push_str(&path);
                if let Some(t) = &tag { s.push(':'); s.push_str(t); }
                let r = ImageRef::parse(&s).expect("generated reference is valid");
                prop_assert_eq!(r.tag.as_ref().map(Tag::as_str), tag.as_deref());
                if let Some(h) = &host { prop_assert_eq!(r.name.domain(), h.as_str()); }
            }
        }
    }
}
