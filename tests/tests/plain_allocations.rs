//! The requests clients send most are routed and admitted without one allocation, as issue 13
//! asks of route classification. A global allocator counts, on the thread that asks only, the
//! allocations made by the sidecar's steps 1–4 ([`engine_path`] then [`admit`]) for each target
//! the docker CLI sends; a target with percent escapes to decode may allocate, and does.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    path::Path,
};

use eci_agent::{
    ids::{CallerKind, ContainerId},
    settings::Settings,
    sidecar::{
        admit::{Admission, admit},
        path::{EnginePath, engine_path},
    },
};

struct Counting;

thread_local! {
    /// `Some(n)` while the thread counts. Const-initialised and without a destructor, so
    /// reading it allocates nothing itself.
    static COUNT: Cell<Option<usize>> = const { Cell::new(None) };
}

fn count_one() {
    COUNT.with(|c| {
        if let Some(n) = c.get() {
            c.set(Some(n + 1));
        }
    });
}

// SAFETY: every call goes to `System` with the caller's own arguments; counting touches only a
// thread-local `Cell`, which neither allocates nor can be reached from another thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: `alloc`'s contract is the caller's, passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this `layout` (every allocation does).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: as for `dealloc`, and `new_size` is the caller's, checked by its contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// How many allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(Some(0)));
    f();
    COUNT.with(|c| c.replace(None)).unwrap_or_default()
}

fn settings(list: &str) -> Settings {
    let text = format!(
        r#"{{"configurationFileVersion": 2, "enhancedContainerIsolation": {{"locked": true,
        "value": true, "dockerSocketMount": {{"imageList": {{"images": ["docker:cli"]}},
        "commandList": {list}}}}}}}"#
    );
    Settings::from_json_str(&text, Path::new("/etc/eci/admin-settings.json")).unwrap()
}

/// What `docker ps`, `inspect`, `images`, `version`, `info`, `logs` and a dashboard's polling
/// send, with and without a version prefix.
const TARGETS: &[(&str, &str)] = &[
    ("HEAD", "/_ping"),
    ("GET", "/_ping"),
    ("GET", "/v1.47/containers/json"),
    (
        "GET",
        "/v1.47/containers/json?all=1&filters=%7B%22status%22%3A%5B%22running%22%5D%7D",
    ),
    ("GET", "/v1.47/containers/4f2a9c/json"),
    (
        "GET",
        "/v1.47/containers/web/logs?stdout=1&stderr=1&tail=100",
    ),
    ("GET", "/v1.47/images/json"),
    ("GET", "/v1.47/version"),
    ("GET", "/info"),
    ("GET", "/v1.47/networks"),
];

#[test]
fn the_clis_common_requests_are_routed_and_admitted_without_allocating() {
    let caller = CallerKind::Container(ContainerId::parse(&"a".repeat(64)).unwrap());
    for list in [
        r#"{"type": "deny", "commands": ["push", "build"]}"#,
        r#"{"type": "allow", "commands": ["ps", "inspect", "logs", "version", "info", "network ls", "images"]}"#,
    ] {
        let settings = settings(list);
        for &(method, target) in TARGETS {
            let (path, query) = match target.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (target, None),
            };
            let decide = || {
                let Ok(EnginePath::Route(route)) = engine_path(path, query) else {
                    return false;
                };
                matches!(
                    admit(&settings, &caller, method, &route, query, target),
                    Admission::Admitted(_)
                )
            };
            // The route table is built on first use, once for the process.
            decide();
            let mut admitted = false;
            let made = allocations(|| admitted = decide());
            assert!(admitted, "{method} {target} refused under {list}");
            assert_eq!(made, 0, "{method} {target} under {list}: allocations");
        }
    }
}

#[test]
fn a_path_with_escapes_to_decode_is_allowed_to_allocate() {
    let made = allocations(|| {
        let route = engine_path("/v1.47/containers/we%62/json", None);
        assert!(matches!(route, Ok(EnginePath::Route(r)) if r.api_path == "/containers/web/json"));
    });
    assert!(made > 0, "the counter sees nothing");
}
