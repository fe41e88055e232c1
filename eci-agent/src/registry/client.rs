//! A registry client that resolves imageList entries to manifest digests (OCI distribution
//! spec / Docker Registry v2), with the anonymous bearer-token flow.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Mutex,
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode, header};
use sha2::{Digest as _, Sha256};

use super::{DigestSource, RegistryError};
use crate::policy::image_ref::{DEFAULT_DOMAIN, Digest, ImagePattern, RepoName};

/// Docker Hub's API host (`docker.io` is only its name in references).
const DOCKER_HUB_API: &str = "registry-1.docker.io";
const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
/// All four: without the list types a registry silently answers with one platform's manifest.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
const MAX_TAG_PAGES: usize = 1000;
const MAX_MANIFEST_BYTES: usize = 4 << 20;

#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// `HOST:PORT` registries reached over plain HTTP.
    pub insecure: HashSet<String>,
    pub timeout: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            insecure: HashSet::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// (realm, service, scope): a token is valid for exactly one of these.
type TokenKey = (String, String, String);

pub struct RegistryClient {
    http: reqwest::Client,
    config: RegistryConfig,
    /// (realm, service, scope) → token and when it stops being usable.
    tokens: Mutex<HashMap<TokenKey, (String, Instant)>>,
    /// Index digest → its platform manifest digests (immutable content, cached forever).
    indexes: Mutex<HashMap<Digest, Vec<Digest>>>,
}

impl RegistryClient {
    pub fn new(config: RegistryConfig) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("eci-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(RegistryError::Client)?;
        Ok(Self {
            http,
            config,
            tokens: Mutex::default(),
            indexes: Mutex::default(),
        })
    }

    fn base_url(&self, domain: &str) -> String {
        if domain == DEFAULT_DOMAIN {
            return format!("https://{DOCKER_HUB_API}");
        }
        let scheme = if self.config.insecure.contains(domain) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{domain}")
    }

    /// One request, retried once with a bearer token when the registry challenges.
    async fn send(
        &self,
        method: Method,
        url: &str,
        repo: &RepoName,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut token: Option<String> = None;
        for _ in 0..2 {
            let mut req = self
                .http
                .request(method.clone(), url)
                .header(header::ACCEPT, ACCEPT);
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.map_err(|e| RegistryError::Http {
                url: url.to_owned(),
                source: e,
            })?;
            if resp.status() != StatusCode::UNAUTHORIZED || token.is_some() {
                return check_status(resp, url);
            }
            let challenge = resp
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_bearer_challenge)
                .ok_or_else(|| RegistryError::Unauthorized {
                    url: url.to_owned(),
                })?;
            token = Some(self.token(&challenge, repo).await?);
        }
        Err(RegistryError::Unauthorized {
            url: url.to_owned(),
        })
    }

    async fn token(&self, c: &Challenge, repo: &RepoName) -> Result<String, RegistryError> {
        let scope = c
            .scope
            .clone()
            .unwrap_or_else(|| format!("repository:{}:pull", repo.path()));
        let key = (
            c.realm.clone(),
            c.service.clone().unwrap_or_default(),
            scope.clone(),
        );
        if let Some((t, until)) = self
            .tokens
            .lock()
            .map_err(|_| RegistryError::Poisoned)?
            .get(&key)
            && *until > Instant::now()
        {
            return Ok(t.clone());
        }
        let mut query = vec![("scope", scope.as_str())];
        if let Some(s) = &c.service {
            query.push(("service", s.as_str()));
        }
        let resp = self
            .http
            .get(&c.realm)
            .query(&query)
            .send()
            .await
            .map_err(|e| RegistryError::Http {
                url: c.realm.clone(),
                source: e,
            })?;
        let resp = check_status(resp, &c.realm)?;
        let body = resp.bytes().await.map_err(|e| RegistryError::Http {
            url: c.realm.clone(),
            source: e,
        })?;
        let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| RegistryError::Json {
            url: c.realm.clone(),
            message: e.to_string(),
        })?;
        let token = t
            .token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Unauthorized {
                url: c.realm.clone(),
            })?;
        // The spec's default lifetime is 60 s; renew a little early.
        let ttl = Duration::from_secs(t.expires_in.unwrap_or(60).max(10).saturating_sub(5));
        self.tokens
            .lock()
            .map_err(|_| RegistryError::Poisoned)?
            .insert(key, (token.clone(), Instant::now() + ttl));
        Ok(token)
    }

    /// `HEAD /v2/<repo>/manifests/<reference>`: the digest and media type, or `None` on 404.
    pub async fn head_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Result<Option<(Digest, String)>, RegistryError> {
        let url = format!(
            "{}/v2/{}/manifests/{reference}",
            self.base_url(repo.domain()),
            repo.path()
        );
        let resp = match self.send(Method::HEAD, &url, repo).await {
            Err(RegistryError::Status { status: 404, .. }) => return Ok(None),
            other => other?,
        };
        let media_type = header_str(&resp, header::CONTENT_TYPE).unwrap_or_default();
        let digest = match header_str(&resp, "docker-content-digest") {
            Some(d) => d.parse().map_err(|_| RegistryError::BadDigest {
                url: url.clone(),
                value: d,
            })?,
            // Older registries omit it: hash the exact manifest bytes instead.
            None => self.get_manifest(repo, reference).await?.0,
        };
        Ok(Some((digest, media_type)))
    }

    /// GET a manifest; returns the digest of the bytes received and the bytes.
    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
    ) -> Result<(Digest, Vec<u8>), RegistryError> {
        let url = format!(
            "{}/v2/{}/manifests/{reference}",
            self.base_url(repo.domain()),
            repo.path()
        );
        let resp = self.send(Method::GET, &url, repo).await?;
        let body = resp.bytes().await.map_err(|e| RegistryError::Http {
            url: url.clone(),
            source: e,
        })?;
        if body.len() > MAX_MANIFEST_BYTES {
            return Err(RegistryError::TooLarge { url });
        }
        Ok((
            Digest::from_bytes(Sha256::digest(&body).into()),
            body.to_vec(),
        ))
    }

    /// The platform manifests an index lists (attestation manifests left out).
    async fn index_children(
        &self,
        repo: &RepoName,
        index: Digest,
    ) -> Result<Vec<Digest>, RegistryError> {
        if let Some(c) = self
            .indexes
            .lock()
            .map_err(|_| RegistryError::Poisoned)?
            .get(&index)
        {
            return Ok(c.clone());
        }
        let (got, body) = self.get_manifest(repo, &index.to_string()).await?;
        if got != index {
            return Err(RegistryError::BadDigest {
                url: format!("{repo}@{index}"),
                value: got.to_string(),
            });
        }
        let parsed: IndexJson = serde_json::from_slice(&body).map_err(|e| RegistryError::Json {
            url: format!("{repo}@{index}"),
            message: e.to_string(),
        })?;
        let children: Vec<Digest> = parsed
            .manifests
            .into_iter()
            .filter(|m| {
                m.annotations
                    .as_ref()
                    .and_then(|a| a.get("vnd.docker.reference.type"))
                    .is_none_or(|t| t != "attestation-manifest")
            })
            .filter_map(|m| m.digest.parse().ok())
            .collect();
        self.indexes
            .lock()
            .map_err(|_| RegistryError::Poisoned)?
            .insert(index, children.clone());
        Ok(children)
    }

    /// Every tag of a repository, following `Link` pagination; sorted (registries need not sort).
    pub async fn tags(&self, repo: &RepoName) -> Result<Vec<String>, RegistryError> {
        let base = self.base_url(repo.domain());
        let mut url = format!("{base}/v2/{}/tags/list?n=1000", repo.path());
        let mut tags = BTreeSet::new();
        let mut seen = HashSet::new();
        for _ in 0..MAX_TAG_PAGES {
            let resp = match self.send(Method::GET, &url, repo).await {
                Err(RegistryError::Status { status: 404, .. }) => return Ok(Vec::new()),
                other => other?,
            };
            let next = header_str(&resp, header::LINK)
                .and_then(|l| parse_next_link(&l))
                .map(|l| absolute(&base, &url, &l));
            let body = resp.bytes().await.map_err(|e| RegistryError::Http {
                url: url.clone(),
                source: e,
            })?;
            let page: TagsJson =
                serde_json::from_slice(&body).map_err(|e| RegistryError::Json {
                    url: url.clone(),
                    message: e.to_string(),
                })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                // A server that ignores `last` would loop forever on the same link.
                Some(n) if seen.insert(n.clone()) => url = n,
                _ => return Ok(tags.into_iter().collect()),
            }
        }
        Err(RegistryError::TooManyPages { url })
    }

    /// The digests one tag stands for: its top-level digest and, for an index, the platform
    /// manifests it lists (the engine may record either). `None` when the tag does not exist.
    pub async fn tag_digests(
        &self,
        repo: &RepoName,
        tag: &str,
    ) -> Result<Option<BTreeSet<Digest>>, RegistryError> {
        let Some((digest, media_type)) = self.head_manifest(repo, tag).await? else {
            return Ok(None);
        };
        let mut out = BTreeSet::from([digest]);
        let media_type = media_type.split(';').next().unwrap_or_default().trim();
        if INDEX_TYPES.contains(&media_type) {
            out.extend(self.index_children(repo, digest).await?);
        }
        Ok(Some(out))
    }
}

impl DigestSource for RegistryClient {
    async fn resolve(&self, pattern: &ImagePattern) -> Result<BTreeSet<Digest>, RegistryError> {
        match pattern {
            ImagePattern::Any => Ok(BTreeSet::new()),
            ImagePattern::Digest(_, d) => Ok(BTreeSet::from([*d])),
            ImagePattern::Tag(repo, tag) => Ok(self
                .tag_digests(repo, tag.as_str())
                .await?
                .unwrap_or_default()),
            ImagePattern::AnyTag(repo) => {
                let mut out = BTreeSet::new();
                for tag in self.tags(repo).await? {
                    // A tag deleted between the listing and the HEAD is simply gone.
                    out.extend(self.tag_digests(repo, &tag).await?.unwrap_or_default());
                }
                Ok(out)
            }
        }
    }
}

fn check_status(resp: reqwest::Response, url: &str) -> Result<reqwest::Response, RegistryError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after = header_str(&resp, header::RETRY_AFTER)
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs);
        return Err(RegistryError::RateLimited {
            url: url.to_owned(),
            retry_after,
        });
    }
    if status == StatusCode::UNAUTHORIZED {
        return Err(RegistryError::Unauthorized {
            url: url.to_owned(),
        });
    }
    Err(RegistryError::Status {
        url: url.to_owned(),
        status: status.as_u16(),
    })
}

fn header_str(resp: &reqwest::Response, name: impl header::AsHeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

#[derive(serde::Deserialize)]
struct TagsJson {
    tags: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
struct IndexJson {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

#[derive(serde::Deserialize)]
struct IndexEntry {
    digest: String,
    annotations: Option<HashMap<String, String>>,
}

/// A `WWW-Authenticate: Bearer …` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

/// Parses RFC 6750 auth-params; quoted values may hold commas (`scope="repository:x:pull,push"`).
pub fn parse_bearer_challenge(h: &str) -> Option<Challenge> {
    let (scheme, rest) = h.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            return None;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => value.push(chars.next()?),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ','))
                .collect::<String>()
                .trim()
                .to_owned();
        }
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
    Some(Challenge {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

/// The `rel="next"` target of a `Link` header.
pub fn parse_next_link(h: &str) -> Option<String> {
    h.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"" || p.trim() == "rel=next")
            .then(|| target.to_owned())
    })
}

fn absolute(base: &str, current: &str, link: &str) -> String {
    if link.starts_with("http://") || link.starts_with("https://") {
        link.to_owned()
    } else if link.starts_with('/') {
        format!("{base}{link}")
    } else {
        let dir = current.rsplit_once('/').map_or(current, |(d, _)| d);
        format!("{dir}/{link}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_bearer_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#).unwrap();
        assert_eq!(c.realm, "https://auth.docker.io/token");
        assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
        assert_eq!(
            c.scope.as_deref(),
            Some("repository:samalba/my-app:pull,push")
        );
        let c = parse_bearer_challenge(
            r#"bearer realm="http://127.0.0.1:1/t", error="insufficient_scope""#,
        )
        .unwrap();
        assert_eq!(c.scope, None);
        assert!(parse_bearer_challenge(r#"Basic realm="x""#).is_none());
        assert!(parse_bearer_challenge("Bearer service=\"x\"").is_none());
        assert!(parse_bearer_challenge("Bearer realm=\"unterminated").is_none());
    }

    #[test]
    fn links() {
        assert_eq!(
            parse_next_link(r#"</v2/x/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/x/tags/list?n=2&last=b")
        );
        assert_eq!(
            parse_next_link(r#"<https://r/v2/x/tags/list?last=b>; rel="prev""#),
            None
        );
        assert_eq!(
            absolute(
                "http://h:1",
                "http://h:1/v2/x/tags/list",
                "/v2/x/tags/list?last=b"
            ),
            "http://h:1/v2/x/tags/list?last=b"
        );
    }

    #[test]
    fn docker_hub_and_insecure_hosts() {
        let c = RegistryClient::new(RegistryConfig {
            insecure: HashSet::from(["127.0.0.1:5000".to_owned()]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.base_url("docker.io"), "https://registry-1.docker.io");
        assert_eq!(c.base_url("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(c.base_url("ghcr.io"), "https://ghcr.io");
    }
}
