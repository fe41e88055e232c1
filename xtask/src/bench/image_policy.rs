//! Image-policy section (issue 4) — HOOK, NOT MEASURED YET.
//!
//! To measure: the added latency of `docker run` with a socket mount
//! (`-v /var/run/docker.sock:/var/run/docker.sock`) through the sidecar versus the same run
//! against the engine without the agent, for an allowed image, a refused one and a derived one,
//! with the digest cache warm; target under 5 ms p99 added by the decision. It needs a private
//! dockerd (tests/src/dockerd.rs), a local docker-registry holding the allowed image
//! (tests/src/registry.rs), and the socket-mount gate in the sidecar. Until then the section
//! reports that it measured nothing rather than a figure.

use super::{Context, Report, Section};

pub struct ImagePolicySection;

impl Section for ImagePolicySection {
    fn name(&self) -> &'static str {
        "image-policy"
    }

    fn run(&self, _cx: &Context) -> anyhow::Result<Report> {
        Ok(Report {
            figures: Vec::new(),
            notes: vec![
                "not measured yet: `docker run` latency with a socket mount (allowed, refused, \
                 derived image) waits for the socket-mount gate; see xtask/src/bench/image_policy.rs"
                    .to_owned(),
            ],
        })
    }
}
