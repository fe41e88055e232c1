//! The policy in force: the settings and the digests resolved for their imageList, published
//! together as one value, so that no reader ever sees new digests with old settings (or the
//! reverse) and a reload is one change for everyone who waits on it.

use std::sync::Arc;

use super::Settings;
use crate::policy::image::AllowedDigests;

#[derive(Debug)]
pub struct PolicySnapshot {
    pub settings: Arc<Settings>,
    pub digests: Arc<AllowedDigests>,
}
