//! What one load-generator run says, and the figures made of many: medians per way, ratios
//! against the direct way and the best-configured HAProxy, and the issue's targets.

use anyhow::{Context as _, bail};

use super::super::{Figure, Target, median};

/// How requests reach the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Direct,
    /// HAProxy as the popular socket proxies configure it (`http-server-close`).
    HaproxyClose,
    /// HAProxy with keep-alive and connection reuse to the engine: the best-configured peer.
    HaproxyKeepAlive,
    Eci,
    /// A byte relay that reads nothing of HTTP (`loadgen relay`): the floor of any proxy here,
    /// which says how far a target is from what the machine allows at all.
    Relay,
    /// HAProxy in TCP mode: the same floor, relayed by mature C code instead of tokio.
    HaproxyTcp,
    /// hyper's server and client alone, configured as the sidecar's (`loadgen hyper-proxy`):
    /// what the sidecar's own pipeline adds above it, and what hyper adds above the relay.
    Hyper,
}

pub const VIAS: [Via; 7] = [
    Via::Direct,
    Via::HaproxyClose,
    Via::HaproxyKeepAlive,
    Via::Eci,
    Via::Relay,
    Via::HaproxyTcp,
    Via::Hyper,
];

/// One loadgen run's JSON line.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpResult {
    pub requests: u64,
    pub errors: u64,
    pub reconnects: u64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// loadgen's own CPU over warm-up and window.
    pub loadgen_cpu_ticks: Option<u64>,
}

impl HttpResult {
    pub fn parse(line: &str) -> anyhow::Result<Self> {
        let json: serde_json::Value =
            serde_json::from_str(line.trim()).with_context(|| format!("loadgen said {line:?}"))?;
        let num = |key: &str| {
            json[key]
                .as_f64()
                .with_context(|| format!("loadgen output has no number {key}: {line}"))
        };
        let count = |key: &str| {
            json[key]
                .as_u64()
                .with_context(|| format!("loadgen output has no count {key}: {line}"))
        };
        let requests = count("requests")?;
        if requests == 0 {
            bail!("no request completed: {line}");
        }
        Ok(Self {
            requests,
            errors: count("errors")?,
            reconnects: count("reconnects")?,
            rps: num("rps")?,
            p50_us: num("p50_us")?,
            p99_us: num("p99_us")?,
            loadgen_cpu_ticks: json["cpu_ticks"].as_u64(),
        })
    }
}

/// One kept run.
pub struct Run {
    pub route: &'static str,
    pub concurrency: u32,
    pub via: Via,
    pub result: HttpResult,
    /// The proxy's own CPU per request (`None` for the direct way).
    pub cpu_us_per_request: Option<f64>,
    pub loadgen_cpu_us_per_request: Option<f64>,
    /// Load generator + nginx + proxy: what one request costs the machine this way.
    pub total_cpu_us_per_request: Option<f64>,
    /// The share of the machine other processes used during the run.
    pub others_share: f64,
    /// Kept although others used more than the limit (every attempt was disturbed).
    pub disturbed: bool,
}

const RPS_VS_HAPROXY_TARGET: &str = "≥ 1.25× HAProxy keep-alive";
const CPU_TARGET: &str = "≤ 0.75× HAProxy keep-alive at c=50";
const P99_TARGET: &str = "≤ 1.3× direct at c=10";

/// The figures of every route and concurrency, in the order of `routes` and `concurrency`.
pub fn http_figures(
    runs: &[Run],
    routes: &[&'static str],
    concurrency: &[u32],
) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for &route in routes {
        for &c in concurrency {
            let med = |via: Via, pick: fn(&Run) -> Option<f64>| {
                let values: Vec<f64> = runs
                    .iter()
                    .filter(|r| r.route == route && r.concurrency == c && r.via == via)
                    .filter_map(pick)
                    .collect();
                median(&values).with_context(|| format!("no {via:?} result for {route} c={c}"))
            };
            let rps = |r: &Run| Some(r.result.rps);
            let p50 = |r: &Run| Some(r.result.p50_us);
            let p99 = |r: &Run| Some(r.result.p99_us);
            let cpu = |r: &Run| r.cpu_us_per_request;
            let loadgen_cpu = |r: &Run| r.loadgen_cpu_us_per_request;
            let total_cpu = |r: &Run| r.total_cpu_us_per_request;
            let name = |what: &str| format!("sidecar.{route}.c{c}.{what}");
            let direct_rps = med(Via::Direct, rps)?;
            let eci_rps = med(Via::Eci, rps)?;
            let ka_rps = med(Via::HaproxyKeepAlive, rps)?;
            let relay_rps = med(Via::Relay, rps)?;
            let direct_p99 = med(Via::Direct, p99)?;
            figures.push(Figure::new(name("rps"), eci_rps, direct_rps, "req/s"));
            figures.push(
                Figure::new(name("rps_vs_haproxy_ka"), eci_rps, ka_rps, "req/s")
                    .with_target(Target::at_least(1.25, RPS_VS_HAPROXY_TARGET)),
            );
            figures.push(Figure::new(
                name("rps_vs_haproxy_close"),
                eci_rps,
                med(Via::HaproxyClose, rps)?,
                "req/s",
            ));
            figures.push(Figure::new(
                name("haproxy_ka_rps"),
                ka_rps,
                direct_rps,
                "req/s",
            ));
            // The floor: what no HTTP work at all reaches against the same peer, and how close
            // the sidecar comes to it.
            figures.push(Figure::new(
                name("relay_rps_vs_haproxy_ka"),
                relay_rps,
                ka_rps,
                "req/s",
            ));
            figures.push(Figure::new(
                name("haproxy_tcp_rps_vs_haproxy_ka"),
                med(Via::HaproxyTcp, rps)?,
                ka_rps,
                "req/s",
            ));
            figures.push(Figure::new(
                name("rps_vs_relay"),
                eci_rps,
                relay_rps,
                "req/s",
            ));
            figures.push(Figure::new(
                name("hyper_rps_vs_haproxy_ka"),
                med(Via::Hyper, rps)?,
                ka_rps,
                "req/s",
            ));
            figures.push(Figure::new(
                name("p50_us"),
                med(Via::Eci, p50)?,
                med(Via::Direct, p50)?,
                "µs",
            ));
            let p99_figure = Figure::new(name("p99_us"), med(Via::Eci, p99)?, direct_p99, "µs");
            figures.push(if c == 10 {
                p99_figure.with_target(Target::at_most(1.3, P99_TARGET))
            } else {
                p99_figure
            });
            for (via, what) in [
                (Via::HaproxyKeepAlive, "haproxy_ka_p99_us"),
                (Via::HaproxyClose, "haproxy_close_p99_us"),
                (Via::Relay, "relay_p99_us"),
                (Via::HaproxyTcp, "haproxy_tcp_p99_us"),
                (Via::Hyper, "hyper_p99_us"),
            ] {
                figures.push(Figure::new(name(what), med(via, p99)?, direct_p99, "µs"));
            }
            let cpu_figure = Figure::new(
                name("cpu_us_per_req"),
                med(Via::Eci, cpu).unwrap_or(f64::NAN),
                med(Via::HaproxyKeepAlive, cpu).unwrap_or(f64::NAN),
                "CPU µs/req",
            );
            figures.push(if c == 50 {
                cpu_figure.with_target(Target::at_most(0.75, CPU_TARGET))
            } else {
                cpu_figure
            });
            for (via, what) in [
                (Via::HaproxyClose, "haproxy_close_cpu_us_per_req"),
                (Via::Relay, "relay_cpu_us_per_req"),
                (Via::HaproxyTcp, "haproxy_tcp_cpu_us_per_req"),
                (Via::Hyper, "hyper_cpu_us_per_req"),
            ] {
                figures.push(Figure::new(
                    name(what),
                    med(via, cpu).unwrap_or(f64::NAN),
                    med(Via::HaproxyKeepAlive, cpu).unwrap_or(f64::NAN),
                    "CPU µs/req",
                ));
            }
            figures.push(Figure::new(
                name("loadgen_cpu_us_per_req"),
                med(Via::Eci, loadgen_cpu).unwrap_or(f64::NAN),
                med(Via::Direct, loadgen_cpu).unwrap_or(f64::NAN),
                "CPU µs/req",
            ));
            figures.push(Figure::new(
                name("total_cpu_us_per_req"),
                med(Via::Eci, total_cpu).unwrap_or(f64::NAN),
                med(Via::Direct, total_cpu).unwrap_or(f64::NAN),
                "CPU µs/req",
            ));
        }
    }
    Ok(figures)
}

/// Failed requests, reconnections and runs kept although disturbed: say where they happened.
pub fn run_notes(runs: &[Run], limit: f64) -> Vec<String> {
    let mut notes: Vec<String> = runs
        .iter()
        .filter(|r| r.result.errors > 0 || r.result.reconnects > 0)
        .map(|r| {
            format!(
                "{} c={} via {:?}: {} failed requests, {} reconnections",
                r.route, r.concurrency, r.via, r.result.errors, r.result.reconnects
            )
        })
        .collect();
    notes.extend(runs.iter().filter(|r| r.disturbed).map(|r| {
        format!(
            "{} c={} via {:?}: kept although other processes used {:.0}% of the machine \
             (every attempt was above {:.0}%)",
            r.route,
            r.concurrency,
            r.via,
            r.others_share * 100.0,
            limit * 100.0
        )
    }));
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadgen_lines_parse_and_empty_runs_are_errors() {
        let line = r#"{"requests":10,"errors":1,"reconnects":0,"seconds":1.0,"rps":10.0,"p50_us":50.0,"p99_us":90.5}"#;
        let r = HttpResult::parse(line).unwrap();
        assert_eq!(r.requests, 10);
        assert_eq!(r.p99_us, 90.5);
        assert_eq!(r.loadgen_cpu_ticks, None);
        let with_cpu = line.replace("}", r#","cpu_ticks":42}"#);
        assert_eq!(
            HttpResult::parse(&with_cpu).unwrap().loadgen_cpu_ticks,
            Some(42)
        );
        assert!(
            HttpResult::parse(
                r#"{"requests":0,"errors":0,"reconnects":0,"rps":0.0,"p50_us":null,"p99_us":null}"#
            )
            .is_err()
        );
        assert!(HttpResult::parse("not json").is_err());
    }

    #[test]
    fn figures_take_medians_per_way_and_set_targets() {
        let routes = ["ping", "containers_json"];
        let concurrency = [1, 10, 50, 200];
        let mut runs = Vec::new();
        for route in routes {
            for c in concurrency {
                for (via, rps, cpu) in [
                    (Via::Direct, 1000.0, None),
                    (Via::HaproxyClose, 300.0, Some(30.0)),
                    (Via::HaproxyKeepAlive, 500.0, Some(20.0)),
                    (Via::Eci, 700.0, Some(14.0)),
                    (Via::Relay, 800.0, Some(10.0)),
                    (Via::HaproxyTcp, 850.0, Some(9.0)),
                    (Via::Hyper, 750.0, Some(12.0)),
                ] {
                    for jitter in [0.9, 1.0, 1.1] {
                        runs.push(Run {
                            route,
                            concurrency: c,
                            via,
                            result: HttpResult {
                                requests: 100,
                                errors: 0,
                                reconnects: 0,
                                rps: rps * jitter,
                                p50_us: 10.0,
                                p99_us: 20.0,
                                loadgen_cpu_ticks: Some(1),
                            },
                            cpu_us_per_request: cpu,
                            loadgen_cpu_us_per_request: Some(8.0),
                            total_cpu_us_per_request: Some(10.0),
                            others_share: 0.01,
                            disturbed: false,
                        });
                    }
                }
            }
        }
        let figures = http_figures(&runs, &routes, &concurrency).unwrap();
        let find = |name: &str| figures.iter().find(|f| f.name == name).unwrap();
        let rps = find("sidecar.ping.c50.rps");
        assert_eq!((rps.value, rps.baseline), (700.0, 1000.0));
        let vs = find("sidecar.containers_json.c200.rps_vs_haproxy_ka");
        assert_eq!((vs.value, vs.baseline), (700.0, 500.0));
        assert_eq!(vs.met(), Some(true));
        let cpu = find("sidecar.ping.c50.cpu_us_per_req");
        assert_eq!((cpu.value, cpu.baseline), (14.0, 20.0));
        assert_eq!(cpu.met(), Some(true));
        assert_eq!(find("sidecar.ping.c10.cpu_us_per_req").met(), None);
        assert_eq!(find("sidecar.ping.c10.p99_us").met(), Some(true));
        assert_eq!(find("sidecar.ping.c1.p99_us").met(), None);
        let floor = find("sidecar.ping.c200.relay_rps_vs_haproxy_ka");
        assert_eq!((floor.value, floor.baseline), (800.0, 500.0));
        let vs_floor = find("sidecar.ping.c10.rps_vs_relay");
        assert_eq!((vs_floor.value, vs_floor.baseline), (700.0, 800.0));
        let floor_cpu = find("sidecar.ping.c50.relay_cpu_us_per_req");
        assert_eq!((floor_cpu.value, floor_cpu.baseline), (10.0, 20.0));
        let c_floor = find("sidecar.containers_json.c50.haproxy_tcp_rps_vs_haproxy_ka");
        assert_eq!((c_floor.value, c_floor.baseline), (850.0, 500.0));
        let c_floor_cpu = find("sidecar.ping.c50.haproxy_tcp_cpu_us_per_req");
        assert_eq!((c_floor_cpu.value, c_floor_cpu.baseline), (9.0, 20.0));
        assert_eq!(find("sidecar.ping.c1.haproxy_tcp_p99_us").baseline, 20.0);
        let hyper_cpu = find("sidecar.ping.c50.hyper_cpu_us_per_req");
        assert_eq!((hyper_cpu.value, hyper_cpu.baseline), (12.0, 20.0));
        let hyper = find("sidecar.ping.c10.hyper_rps_vs_haproxy_ka");
        assert_eq!((hyper.value, hyper.baseline), (750.0, 500.0));
        assert_eq!(find("sidecar.ping.c10.hyper_p99_us").baseline, 20.0);
        assert_eq!(
            figures.len(),
            routes.len() * concurrency.len() * 22,
            "{:#?}",
            figures.iter().map(|f| &f.name).collect::<Vec<_>>()
        );
        assert!(run_notes(&runs, 0.1).is_empty());
        runs[0].disturbed = true;
        assert_eq!(run_notes(&runs, 0.1).len(), 1);
    }
}
