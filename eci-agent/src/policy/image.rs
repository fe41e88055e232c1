//! The image verdict for a container that can reach the socket.
//!
//! An image passes when one of its digests (the immutable image ID, or a digest the engine
//! recorded for it after a pull) equals a digest the registry edge resolved for an imageList
//! entry, or that an entry pins. Repository strings are never compared: `docker tag other
//! allowed:1` changes names, not digests. With `allowDerivedImages`, a local-only image also
//! passes when the layers of a directly allowed local image are a non-empty strict prefix of
//! its own.

use std::collections::{BTreeSet, HashMap};

use super::{
    image_ref::{Digest, ImagePattern},
    messages::ReasonCode,
};

/// The compiled `imageList`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImagePolicy {
    pub patterns: Vec<ImagePattern>,
    pub allow_derived_images: bool,
}

impl ImagePolicy {
    /// `"*"` is listed: every image passes, no lookup needed.
    pub fn allows_every_image(&self) -> bool {
        self.patterns.contains(&ImagePattern::Any)
    }

    /// Whether deciding may need the engine's list of local images (derived-image check).
    pub fn needs_local_images(&self) -> bool {
        self.allow_derived_images && !self.allows_every_image()
    }

    /// Entries whose digests come from a registry (tag and `:*` entries).
    pub fn registry_entries(&self) -> impl Iterator<Item = &ImagePattern> {
        self.patterns
            .iter()
            .filter(|p| matches!(p, ImagePattern::Tag(..) | ImagePattern::AnyTag(_)))
    }
}

/// The digests currently allowed, indexed by digest. Built from the policy (pinned entries) and
/// the registry edge's last good resolution of each tag entry.
#[derive(Clone, Debug, Default)]
pub struct AllowedDigests {
    by_digest: HashMap<Digest, ImagePattern>,
    /// Tag entries never resolved yet: they allow nothing until the registry answers once.
    unresolved: Vec<ImagePattern>,
}

impl AllowedDigests {
    /// `resolved` maps a registry entry to the digests last fetched for it (index and
    /// platform-manifest digests alike); an entry absent from it was never resolved.
    pub fn build(policy: &ImagePolicy, resolved: &HashMap<ImagePattern, BTreeSet<Digest>>) -> Self {
        let mut out = Self::default();
        for p in &policy.patterns {
            match p {
                ImagePattern::Any => {}
                ImagePattern::Digest(_, d) => {
                    out.by_digest.entry(*d).or_insert_with(|| p.clone());
                }
                ImagePattern::Tag(..) | ImagePattern::AnyTag(_) => match resolved.get(p) {
                    Some(set) => {
                        for d in set {
                            out.by_digest.entry(*d).or_insert_with(|| p.clone());
                        }
                    }
                    None => out.unresolved.push(p.clone()),
                },
            }
        }
        out
    }

    pub fn entry_for(&self, digest: &Digest) -> Option<&ImagePattern> {
        self.by_digest.get(digest)
    }

    pub fn unresolved(&self) -> &[ImagePattern] {
        &self.unresolved
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// What the engine says about one local image, already filtered by the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFacts {
    /// The immutable image ID (config digest in the graphdriver store, target digest in the
    /// containerd store); for a container, its `Image` field, never a name.
    pub id: Digest,
    /// Digests the engine bound to this content: graphdriver `RepoDigests` (written only by pull
    /// and push) and containerd `Descriptor.digest`. The edge must leave out containerd
    /// `RepoDigests`, which are built from names and can be spoofed by `docker load`.
    pub recorded_digests: Vec<Digest>,
    /// `RootFS.Layers` (diff IDs), in order.
    pub layers: Vec<Digest>,
    /// The image has no registry origin (local build, `docker load`, import).
    pub local_only: bool,
}

impl ImageFacts {
    fn digests(&self) -> impl Iterator<Item = &Digest> {
        std::iter::once(&self.id).chain(self.recorded_digests.iter())
    }
}

/// Why an image passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedBy {
    /// `"*"` is listed.
    EveryImage,
    /// One of its digests is allowed by this entry.
    Digest { entry: ImagePattern, digest: Digest },
    /// Derived from the local image `base`, itself allowed by `entry`.
    Derived { entry: ImagePattern, base: Digest },
}

/// Why an image may not mount the socket. Every variant produces the same user-facing text
/// ([`super::messages::socket_mount_denied`]); the variant is for logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// No digest of the image is allowed and every entry has been resolved.
    NotInList,
    /// Nothing matched while some entries were never resolved (registry not reached yet).
    Unresolved { entries: Vec<ImagePattern> },
    /// allowDerivedImages is on, the image is local-only, but no allowed local image is its base.
    NoAllowedBase,
}

impl DenyReason {
    pub fn code(&self) -> ReasonCode {
        match self {
            Self::NotInList => ReasonCode::ImageNotAllowed,
            Self::Unresolved { .. } => ReasonCode::ImageNoDigestsYet,
            Self::NoAllowedBase => ReasonCode::DerivedBaseNotAllowed,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow(AllowedBy),
    Deny(DenyReason),
}

impl Verdict {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow(_))
    }
}

impl ImagePolicy {
    /// Decides whether a container whose image is `image` may mount the socket.
    ///
    /// `local_images` is consulted only when [`Self::needs_local_images`]; the edge may pass an
    /// empty slice otherwise.
    pub fn decide(
        &self,
        image: &ImageFacts,
        allowed: &AllowedDigests,
        local_images: &[ImageFacts],
    ) -> Verdict {
        if self.allows_every_image() {
            return Verdict::Allow(AllowedBy::EveryImage);
        }
        if let Some(v) = direct(image, allowed) {
            return Verdict::Allow(v);
        }
        if self.allow_derived_images && image.local_only {
            let base = local_images.iter().find_map(|base| {
                let AllowedBy::Digest { entry, .. } = direct(base, allowed)? else {
                    return None;
                };
                // An empty base is a prefix of everything; an equal list is the same filesystem.
                let derived = !base.layers.is_empty()
                    && base.layers.len() < image.layers.len()
                    && image.layers.starts_with(&base.layers);
                derived.then_some(AllowedBy::Derived {
                    entry,
                    base: base.id,
                })
            });
            return match base {
                Some(v) => Verdict::Allow(v),
                None => Verdict::Deny(DenyReason::NoAllowedBase),
            };
        }
        if allowed.unresolved.is_empty() {
            Verdict::Deny(DenyReason::NotInList)
        } else {
            Verdict::Deny(DenyReason::Unresolved {
                entries: allowed.unresolved.clone(),
            })
        }
    }
}

fn direct(image: &ImageFacts, allowed: &AllowedDigests) -> Option<AllowedBy> {
    image.digests().find_map(|d| {
        allowed.entry_for(d).map(|entry| AllowedBy::Digest {
            entry: entry.clone(),
            digest: *d,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::from_bytes([n; 32])
    }

    fn pat(s: &str) -> ImagePattern {
        ImagePattern::parse(s).unwrap()
    }

    fn policy(entries: &[&str], derived: bool) -> ImagePolicy {
        ImagePolicy {
            patterns: entries.iter().map(|s| pat(s)).collect(),
            allow_derived_images: derived,
        }
    }

    fn img(id: u8, recorded: &[u8], layers: &[u8], local_only: bool) -> ImageFacts {
        ImageFacts {
            id: d(id),
            recorded_digests: recorded.iter().map(|&n| d(n)).collect(),
            layers: layers.iter().map(|&n| d(n)).collect(),
            local_only,
        }
    }

    fn resolved(entries: &[(&str, &[u8])]) -> HashMap<ImagePattern, BTreeSet<Digest>> {
        entries
            .iter()
            .map(|(p, ds)| (pat(p), ds.iter().map(|&n| d(n)).collect()))
            .collect()
    }

    #[test]
    fn decision_table() {
        let pinned = format!("alpine@{}", d(50));
        // (entries, derived, resolved, image, local images, allowed?)
        type Case<'a> = (
            Vec<&'a str>,
            bool,
            Vec<(&'a str, &'a [u8])>,
            ImageFacts,
            Vec<ImageFacts>,
            bool,
        );
        let cases: Vec<Case> = vec![
            // Allowed tag: the engine recorded the index digest after the pull.
            (
                vec!["docker:cli"],
                false,
                vec![("docker:cli", &[10, 11])],
                img(1, &[10], &[100], false),
                vec![],
                true,
            ),
            // containerd store: the ID is the index digest itself.
            (
                vec!["docker:cli"],
                false,
                vec![("docker:cli", &[10])],
                img(10, &[], &[100], false),
                vec![],
                true,
            ),
            // Re-tag of an unlisted image under the allowed name: its digests are its own.
            (
                vec!["docker:cli"],
                false,
                vec![("docker:cli", &[10])],
                img(2, &[], &[200], true),
                vec![],
                false,
            ),
            (
                vec!["docker:*"],
                false,
                vec![("docker:*", &[10, 12])],
                img(3, &[12], &[], false),
                vec![],
                true,
            ),
            (
                vec![&pinned],
                false,
                vec![],
                img(50, &[], &[], false),
                vec![],
                true,
            ),
            (
                vec![&pinned],
                false,
                vec![],
                img(51, &[], &[], false),
                vec![],
                false,
            ),
            (
                vec!["*"],
                false,
                vec![],
                img(9, &[], &[], true),
                vec![],
                true,
            ),
            (
                vec![],
                false,
                vec![],
                img(9, &[], &[], false),
                vec![],
                false,
            ),
            // Never resolved: allows nothing.
            (
                vec!["docker:cli"],
                false,
                vec![],
                img(10, &[], &[], false),
                vec![],
                false,
            ),
            // Derived: local-only image on top of the allowed base's layers.
            (
                vec!["base:1"],
                true,
                vec![("base:1", &[20])],
                img(30, &[], &[1, 2, 3], true),
                vec![img(21, &[20], &[1, 2], false)],
                true,
            ),
            // ... but not without allowDerivedImages.
            (
                vec!["base:1"],
                false,
                vec![("base:1", &[20])],
                img(30, &[], &[1, 2, 3], true),
                vec![img(21, &[20], &[1, 2], false)],
                false,
            ),
            // ... not when it is not local-only.
            (
                vec!["base:1"],
                true,
                vec![("base:1", &[20])],
                img(30, &[31], &[1, 2, 3], false),
                vec![img(21, &[20], &[1, 2], false)],
                false,
            ),
            // ... not when the layers are equal (strict prefix).
            (
                vec!["base:1"],
                true,
                vec![("base:1", &[20])],
                img(30, &[], &[1, 2], true),
                vec![img(21, &[20], &[1, 2], false)],
                false,
            ),
            // ... not from a base with no layers.
            (
                vec!["base:1"],
                true,
                vec![("base:1", &[20])],
                img(30, &[], &[1], true),
                vec![img(21, &[20], &[], false)],
                false,
            ),
            // ... not when the prefix differs.
            (
                vec!["base:1"],
                true,
                vec![("base:1", &[20])],
                img(30, &[], &[1, 9, 3], true),
                vec![img(21, &[20], &[1, 2], false)],
                false,
            ),
            // ... not from a local image that is not itself allowed.
            (
                vec!["base:1"],
                true,
                vec![("base:1", &[20])],
                img(30, &[], &[1, 2, 3], true),
                vec![img(21, &[], &[1, 2], true)],
                false,
            ),
        ];
        for (i, (entries, derived, res, image, locals, want)) in cases.into_iter().enumerate() {
            let p = policy(&entries, derived);
            let allowed = AllowedDigests::build(&p, &resolved(&res));
            let v = p.decide(&image, &allowed, &locals);
            assert_eq!(v.is_allowed(), want, "case {i}: {entries:?} -> {v:?}");
        }
    }

    #[test]
    fn deny_reasons() {
        let p = policy(&["docker:cli"], false);
        let v = p.decide(
            &img(1, &[], &[], false),
            &AllowedDigests::build(&p, &HashMap::new()),
            &[],
        );
        assert_eq!(
            v,
            Verdict::Deny(DenyReason::Unresolved {
                entries: vec![pat("docker:cli")]
            })
        );
        assert_eq!(DenyReason::NotInList.code().as_str(), "image_not_allowed");
        let p = policy(&["base:1"], true);
        let v = p.decide(
            &img(1, &[], &[1], true),
            &AllowedDigests::build(&p, &resolved(&[("base:1", &[5])])),
            &[],
        );
        assert_eq!(v, Verdict::Deny(DenyReason::NoAllowedBase));
    }
}
