//! The eci VM: Debian's engine and eci-agent together in a QEMU guest whose kernel enforces.
//! `image` builds its disk; `boot` starts it; `e2e` runs the end-to-end suite inside it;
//! `channel` is the host end of the relay to the agent's sidecar.

pub mod attempt;
pub mod boot;
pub mod channel;
pub mod e2e;
pub mod image;
pub mod serve;
pub mod signals;
