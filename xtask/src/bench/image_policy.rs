//! Image-policy section (issue 4): what the socket-mount gate adds to `docker run`, and the
//! gate's own decision time. The measuring is done by `policy-bench` (tests/src/bin), which owns
//! a private dockerd, a docker-registry on 127.0.0.1 and the real `eci-agent run` (allowed image
//! listed, `allowDerivedImages: true`, digests resolved before anything is timed); it prints the
//! samples of each case through the agent and straight to the engine, taken interleaved. Here
//! they become p50/p99 figures: value through the agent, baseline direct.
//!
//! - `run_*`: `docker run --rm` of a container that mounts the socket (allowed, derived image;
//!   refused: the time until the CLI has the refusal, against the engine's own refusal of a
//!   create). A few hundred ms of engine work each, so only large differences mean anything.
//! - `create_check_*`, `start_check_*`: one request each on a kept-alive connection, where the
//!   engine's part is small (a create the engine refuses by its name after its own checks and
//!   image lookup, a start of a running container); the difference is the decision plus the
//!   proxy hop, which `create_no_mount` (a create the gate clears at once) shows alone. The
//!   target, under 5 ms added at p99, is on these.
//! - `create_profile_*`: the same from a real container caller (policy-bench's static build
//!   running in a container of the allowed image that holds the agent's socket), so the
//!   container-caller profile judges each body too: binds of a host directory and the socket,
//!   added capabilities, a PID namespace shared with a running container (one more inspect), a
//!   security option; `_refused` adds `Privileged`, which the profile refuses.
//! - `profile_decision`: the profile's decision alone, in microseconds (policy-bench judging the
//!   `create_profile_allowed` body in process, host paths resolved on the host; baseline:
//!   decoding the body alone). What `create_profile_*` add beyond it is the engine's: an inspect
//!   of the container whose PID namespace is joined, and the proxy hop.

use std::{collections::BTreeMap, process::Command};

use anyhow::Context as _;

use super::{Context, Figure, Report, Section, Target, percentile};
use crate::{build, exec, setup};

pub struct ImagePolicySection;

/// `docker run` cases, then the gate's requests (which carry the target).
const RUN_CASES: &[&str] = &["run_allowed", "run_derived", "run_refused"];
const CHECK_CASES: &[&str] = &[
    "create_check_allowed",
    "create_check_derived",
    "create_check_refused",
    "create_no_mount",
    "start_check_allowed",
    "start_check_derived",
    "create_profile_allowed",
    "create_profile_refused",
];

const ADDED_TARGET: Target = Target::added_at_most(5.0, "≤ 5 ms added at p99");

/// In-process timings, reported in µs: the profile's decision alone.
const DECISION_CASES: &[&str] = &["profile_decision"];
const DECISION_TARGET: Target = Target::added_at_most(5000.0, "≤ 5 ms added at p99");

struct Plan {
    runs: usize,
    checks: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                runs: 5,
                checks: 50,
            }
        } else {
            Self {
                runs: 30,
                checks: 300,
            }
        }
    }
}

impl Section for ImagePolicySection {
    fn name(&self) -> &'static str {
        "image-policy"
    }

    fn run(&self, cx: &Context) -> anyhow::Result<Report> {
        setup::build_tools()?;
        let agent = build::agent(cx.root)?;
        let bench = build::host_bin(cx.root, "eci-tests", "policy-bench")?;
        let client = build::static_bin(cx.root, "eci-tests", "policy-bench")?;
        let plan = Plan::new(cx.quick);
        let out = exec::stdout(
            Command::new(&bench)
                .arg(&agent)
                .arg(plan.runs.to_string())
                .arg(plan.checks.to_string())
                .arg(&client),
        )?;
        let cases = parse(&out)?;
        let mut report = Report {
            figures: figures(&cases)?,
            notes: Vec::new(),
        };
        report.notes.push(format!(
            "image_policy.*: value through eci-agent, baseline straight to the engine (same \
             dockerd, same images, interleaved); run_*: {} `docker run --rm` per way and case \
             (p99 of so few is their maximum); *_check_* and create_no_mount: {} requests per way \
             on one kept-alive connection (create_profile_*: from a container caller, so the \
             container-caller profile judges them too); run_refused's baseline is the engine \
             refusing a create itself",
            plan.runs, plan.checks
        ));
        Ok(report)
    }
}

/// Samples of one case, ms.
#[derive(Debug, Default, PartialEq)]
struct Samples {
    agent: Vec<f64>,
    direct: Vec<f64>,
}

/// policy-bench's JSON line: `{"cases": {"<case>": {"agent_ms": [...], "direct_ms": [...]}}}`.
fn parse(line: &str) -> anyhow::Result<BTreeMap<String, Samples>> {
    let json: serde_json::Value =
        serde_json::from_str(line.trim()).with_context(|| format!("policy-bench said {line:?}"))?;
    let cases = json["cases"]
        .as_object()
        .context("policy-bench output has no cases")?;
    let list = |case: &str, v: &serde_json::Value| -> anyhow::Result<Vec<f64>> {
        v.as_array()
            .with_context(|| format!("policy-bench case {case}: not a list"))?
            .iter()
            .map(|x| x.as_f64().context("not a number"))
            .collect()
    };
    cases
        .iter()
        .map(|(case, v)| {
            Ok((
                case.clone(),
                Samples {
                    agent: list(case, &v["agent_ms"])?,
                    direct: list(case, &v["direct_ms"])?,
                },
            ))
        })
        .collect()
}

fn figures(cases: &BTreeMap<String, Samples>) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for &case in RUN_CASES.iter().chain(CHECK_CASES) {
        let samples = cases
            .get(case)
            .with_context(|| format!("policy-bench measured no {case}"))?;
        let at =
            |xs: &[f64], p: f64| percentile(xs, p).with_context(|| format!("{case}: no samples"));
        figures.push(Figure::new(
            format!("image_policy.{case}.p50_ms"),
            at(&samples.agent, 50.0)?,
            at(&samples.direct, 50.0)?,
            "ms",
        ));
        let p99 = Figure::new(
            format!("image_policy.{case}.p99_ms"),
            at(&samples.agent, 99.0)?,
            at(&samples.direct, 99.0)?,
            "ms",
        );
        figures.push(
            if CHECK_CASES.contains(&case) && case != "create_no_mount" {
                p99.with_target(ADDED_TARGET)
            } else {
                p99
            },
        );
    }
    for &case in DECISION_CASES {
        let samples = cases
            .get(case)
            .with_context(|| format!("policy-bench measured no {case}"))?;
        let at_us = |xs: &[f64], p: f64| {
            percentile(xs, p)
                .map(|ms| ms * 1e3)
                .with_context(|| format!("{case}: no samples"))
        };
        figures.push(Figure::new(
            format!("image_policy.{case}.p50_us"),
            at_us(&samples.agent, 50.0)?,
            at_us(&samples.direct, 50.0)?,
            "µs",
        ));
        figures.push(
            Figure::new(
                format!("image_policy.{case}.p99_us"),
                at_us(&samples.agent, 99.0)?,
                at_us(&samples.direct, 99.0)?,
                "µs",
            )
            .with_target(DECISION_TARGET),
        );
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(cases: &[&str]) -> String {
        let cases: serde_json::Map<String, serde_json::Value> = cases
            .iter()
            .map(|c| {
                (
                    (*c).to_owned(),
                    serde_json::json!({"agent_ms": [3.0, 1.0, 2.0], "direct_ms": [1.0, 0.5, 9.0]}),
                )
            })
            .collect();
        serde_json::json!({ "cases": cases }).to_string()
    }

    #[test]
    fn every_case_gives_p50_and_p99_and_checks_carry_the_target() {
        let all: Vec<&str> = RUN_CASES
            .iter()
            .chain(CHECK_CASES)
            .chain(DECISION_CASES)
            .copied()
            .collect();
        let figures = figures(&parse(&line(&all)).unwrap()).unwrap();
        assert_eq!(figures.len(), all.len() * 2);
        let decision = figures
            .iter()
            .find(|f| f.name == "image_policy.profile_decision.p99_us")
            .unwrap();
        assert_eq!((decision.value, decision.baseline), (3000.0, 9000.0));
        let p99 = figures
            .iter()
            .find(|f| f.name == "image_policy.start_check_allowed.p99_ms")
            .unwrap();
        assert_eq!((p99.value, p99.baseline), (3.0, 9.0));
        assert_eq!(p99.met(), Some(true));
        let p50 = figures
            .iter()
            .find(|f| f.name == "image_policy.run_refused.p50_ms")
            .unwrap();
        assert_eq!((p50.value, p50.baseline), (2.0, 1.0));
        assert!(p50.target.is_none());
        let targeted = figures.iter().filter(|f| f.target.is_some()).count();
        assert_eq!(targeted, CHECK_CASES.len() - 1 + DECISION_CASES.len());
    }

    #[test]
    fn missing_cases_and_bad_output_are_errors() {
        assert!(figures(&parse(&line(&["run_allowed"])).unwrap()).is_err());
        assert!(parse("not json").is_err());
        assert!(parse(r#"{"cases":{"x":{"agent_ms":"no","direct_ms":[]}}}"#).is_err());
        let empty = parse(r#"{"cases":{"run_allowed":{"agent_ms":[],"direct_ms":[]}}}"#).unwrap();
        assert!(figures(&empty).is_err());
    }
}
