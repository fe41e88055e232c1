#![no_std]
// This file exists so that eci-agent can name eci-ebpf as a build-dependency (cache invalidation,
// cargo#12375); the programs are in the `eci` binary (src/main.rs).
