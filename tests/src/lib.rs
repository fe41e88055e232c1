//! Fixtures shared by the integration tests (dockerd, registry, cgroups) and the kernel-VM suite.
