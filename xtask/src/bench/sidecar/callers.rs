//! Callers section (issue 13): the sidecar timed for *container* callers, which the sidecar
//! section cannot do (its upstream is nginx, and a container caller is classified by the
//! agent's container table, which only a real engine fills). Here the upstream is a private
//! dockerd (its own data root under the scratch directory, never /var/run/docker.sock), and the
//! load generator runs in a container of that engine (`docker exec` of the static `loadgen`),
//! reaching the engine four ways ([`Way`], set up by [`Rig`]): straight to its socket, through
//! HAProxy with keep-alive, and through `eci-agent run` under a deny list and an allow list. Every way is
//! interleaved per round, its order rotating, and the figures are medians.
//!
//! dockerd answers far slower than nginx, so the proxies' share of a request is smaller here
//! than in the sidecar section; the proxies' own CPU per request is comparable across both.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use super::{
    cpu::{self, MachineTicks},
    engine_rig::{Rig, WAYS, Way},
    results::HttpResult,
};
use crate::{
    bench::{Context, Figure, Report, Scratch, Section, Target, median},
    build, exec, setup,
};

pub struct CallersSection;

/// (figure name, request path); Debian's dockerd speaks API 1.41 at most.
const ROUTES: &[(&str, &str)] = &[
    ("ping", "/_ping"),
    ("containers_json", "/v1.41/containers/json"),
];
const CONCURRENCY: &[u32] = &[10, 50];

struct Sample {
    route: &'static str,
    concurrency: u32,
    way: Way,
    result: HttpResult,
    /// The proxy's own CPU per request (none for the direct way).
    cpu_us: Option<f64>,
    others_share: f64,
}

impl Section for CallersSection {
    fn name(&self) -> &'static str {
        "callers"
    }

    fn run(&self, cx: &Context) -> anyhow::Result<Report> {
        setup::build_tools()?;
        setup::bench_tools()?;
        let agent = build::agent(cx.root)?;
        let loadgen = build::static_bin(cx.root, "eci-tests", "loadgen")?;
        let scratch = Scratch::new("callers")?;
        let dir = scratch.path();
        let (rounds, seconds, warmup) = if cx.quick {
            (1, 1.0, 0.25)
        } else {
            (3, 2.0, 0.5)
        };
        let rig = Rig::start(dir, &agent, &loadgen)?;
        let tick = cpu::clock_ticks_per_second();
        check_classification(&rig, &loadgen)?;
        let mut samples = Vec::new();
        for round in 0..rounds {
            for &(route, path) in ROUTES {
                for &concurrency in CONCURRENCY {
                    for i in 0..WAYS.len() {
                        let way = WAYS[(i + round) % WAYS.len()];
                        let sample =
                            measure(&rig, (route, path, concurrency, way), seconds, warmup, tick)?;
                        println!(
                            "  {route} c={concurrency} {}: {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs{}, others {:.0}%",
                            way.name(),
                            sample.result.rps,
                            sample.result.p50_us,
                            sample.result.p99_us,
                            sample
                                .cpu_us
                                .map_or(String::new(), |c| format!(", {c:.1} CPU µs/req")),
                            sample.others_share * 100.0,
                        );
                        samples.push(sample);
                    }
                }
            }
        }
        drop(rig);
        let mut report = Report {
            figures: figures(&samples)?,
            notes: Vec::new(),
        };
        report.notes.push(format!(
            "callers.*: a container caller (loadgen exec'd in a container of a private dockerd) \
             reaching the engine straight (direct), through HAProxy keep-alive (haproxy_ka) and \
             through eci-agent under a deny list and an allow list; rps and p99: value that way, \
             baseline direct; rps_vs_haproxy_ka and cpu_us_per_req: value eci-agent, baseline \
             HAProxy keep-alive (the proxies' own CPU from /proc); medians of {rounds} round(s) of \
             {seconds} s; the engine is dockerd, whose own time dominates each request"
        ));
        Ok(report)
    }
}

/// The figures are only worth something if the agents take the caller for a container: under
/// the allow list, `docker images` (not listed) is refused to it and served to the host.
fn check_classification(rig: &Rig, loadgen: &Path) -> anyhow::Result<()> {
    const IMAGES: &str = "/v1.41/images/json";
    let out = exec::stdout(&mut rig.loadgen(Way::EciAllow, IMAGES, 1, 0.3, 0.0))?;
    let json: serde_json::Value =
        serde_json::from_str(out.trim()).with_context(|| format!("loadgen said {out:?}"))?;
    if json["requests"].as_u64() != Some(0) || json["errors"].as_u64().unwrap_or(0) == 0 {
        bail!(
            "the allow-list agent served `docker images` to the caller container: it was not taken for a container ({out})"
        );
    }
    let host = exec::stdout(
        Command::new(loadgen)
            .arg("http")
            .arg(rig.socket(Way::EciAllow))
            .args([IMAGES, "1", "0.3", "0"]),
    )?;
    let host = HttpResult::parse(&host)?;
    if host.errors > 0 {
        bail!("the allow-list agent refused `docker images` to the host as well");
    }
    Ok(())
}

fn measure(
    rig: &Rig,
    (route, path, concurrency, way): (&'static str, &str, u32, Way),
    seconds: f64,
    warmup: f64,
    tick: f64,
) -> anyhow::Result<Sample> {
    let engine_pid = rig.engine_pid();
    let proxy_pid = rig.proxy_pid(way);
    let proxy_before = proxy_pid.map(cpu::process_ticks).transpose()?;
    let engine_before = cpu::process_ticks(engine_pid)?;
    let machine_before = MachineTicks::now()?;
    let out = exec::stdout(&mut rig.loadgen(way, path, concurrency, seconds, warmup))?;
    let machine_after = MachineTicks::now()?;
    let engine_ticks = cpu::process_ticks(engine_pid)? - engine_before;
    let proxy_ticks = proxy_before
        .zip(proxy_pid.map(cpu::process_ticks).transpose()?)
        .map(|(b, a)| a - b);
    let result = HttpResult::parse(&out)?;
    if result.errors > 0 {
        bail!(
            "{route} c={concurrency} {}: {} errors",
            way.name(),
            result.errors
        );
    }
    // The CPU was counted over warm-up and window, the requests over the window only.
    let per_request = |ticks: u64| {
        ticks as f64 * 1e6 / tick / result.requests as f64 * seconds / (seconds + warmup)
    };
    let ours = result.loadgen_cpu_ticks.unwrap_or(0) + engine_ticks + proxy_ticks.unwrap_or(0);
    Ok(Sample {
        route,
        concurrency,
        way,
        cpu_us: proxy_ticks.map(per_request),
        others_share: machine_before.others_share(machine_after, ours),
        result,
    })
}

/// Medians per route, concurrency and way, as figures with the targets on eci-agent's.
fn figures(samples: &[Sample]) -> anyhow::Result<Vec<Figure>> {
    let med = |route: &str, c: u32, way: Way, f: &dyn Fn(&Sample) -> Option<f64>| {
        median(
            &samples
                .iter()
                .filter(|s| s.route == route && s.concurrency == c && s.way == way)
                .filter_map(f)
                .collect::<Vec<_>>(),
        )
        .with_context(|| format!("no sample for {route} c={c} {}", way.name()))
    };
    let mut figures = Vec::new();
    for &(route, _) in ROUTES {
        for &c in CONCURRENCY {
            let rps = |way| med(route, c, way, &|s| Some(s.result.rps));
            let p99 = |way| med(route, c, way, &|s| Some(s.result.p99_us));
            let cpu = |way| med(route, c, way, &|s| s.cpu_us);
            let direct_rps = rps(Way::Direct)?;
            let haproxy_rps = rps(Way::HaproxyKeepAlive)?;
            let haproxy_cpu = cpu(Way::HaproxyKeepAlive)?;
            figures.push(Figure::new(
                format!("callers.{route}.c{c}.haproxy_ka.rps"),
                haproxy_rps,
                direct_rps,
                "req/s",
            ));
            for way in [Way::EciDeny, Way::EciAllow] {
                let name = format!("callers.{route}.c{c}.{}", way.name());
                figures.push(Figure::new(
                    format!("{name}.rps"),
                    rps(way)?,
                    direct_rps,
                    "req/s",
                ));
                figures.push(
                    Figure::new(
                        format!("{name}.rps_vs_haproxy_ka"),
                        rps(way)?,
                        haproxy_rps,
                        "req/s",
                    )
                    .with_target(Target::at_least(1.25, "≥ 1.25× HAProxy keep-alive")),
                );
                let cpu_figure = Figure::new(
                    format!("{name}.cpu_us_per_req"),
                    cpu(way)?,
                    haproxy_cpu,
                    "µs",
                );
                figures.push(if c == 50 {
                    cpu_figure
                        .with_target(Target::at_most(0.75, "≤ 0.75× HAProxy keep-alive's CPU"))
                } else {
                    cpu_figure
                });
                let p99_figure =
                    Figure::new(format!("{name}.p99"), p99(way)?, p99(Way::Direct)?, "µs");
                figures.push(if c == 10 {
                    p99_figure.with_target(Target::at_most(1.3, "p99 ≤ 1.3× direct"))
                } else {
                    p99_figure
                });
            }
        }
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(route: &'static str, concurrency: u32, way: Way, rps: f64, cpu_us: f64) -> Sample {
        Sample {
            route,
            concurrency,
            way,
            result: HttpResult {
                requests: 1000,
                errors: 0,
                reconnects: 0,
                rps,
                p50_us: 100.0,
                p99_us: 1000.0,
                loadgen_cpu_ticks: None,
            },
            cpu_us: (way != Way::Direct).then_some(cpu_us),
            others_share: 0.0,
        }
    }

    #[test]
    fn eci_figures_carry_the_targets_against_haproxy_and_direct() {
        let mut samples = Vec::new();
        for &(route, _) in ROUTES {
            for &c in CONCURRENCY {
                samples.push(sample(route, c, Way::Direct, 1000.0, 0.0));
                samples.push(sample(route, c, Way::HaproxyKeepAlive, 800.0, 20.0));
                samples.push(sample(route, c, Way::EciDeny, 1000.0, 10.0));
                samples.push(sample(route, c, Way::EciAllow, 900.0, 16.0));
            }
        }
        let figures = figures(&samples).unwrap();
        let find = |name: &str| figures.iter().find(|f| f.name == name).unwrap();
        let vs = find("callers.ping.c10.eci_deny.rps_vs_haproxy_ka");
        assert_eq!((vs.value, vs.baseline), (1000.0, 800.0));
        assert_eq!(vs.met(), Some(true));
        assert_eq!(
            find("callers.ping.c10.eci_allow.rps_vs_haproxy_ka").met(),
            Some(false)
        );
        assert_eq!(
            find("callers.ping.c50.eci_deny.cpu_us_per_req").met(),
            Some(true)
        );
        assert_eq!(
            find("callers.ping.c50.eci_allow.cpu_us_per_req").met(),
            Some(false)
        );
        assert_eq!(find("callers.ping.c10.eci_deny.cpu_us_per_req").met(), None);
        assert_eq!(find("callers.ping.c10.eci_deny.p99").met(), Some(true));
        samples.retain(|s| s.way != Way::HaproxyKeepAlive || s.concurrency != 50);
        assert!(figures_err(&samples).contains("haproxy_ka"));
    }

    fn figures_err(samples: &[Sample]) -> String {
        format!("{:#}", figures(samples).err().unwrap())
    }
}
