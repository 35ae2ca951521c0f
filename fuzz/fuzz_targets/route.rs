//! Route matching: arbitrary routes, Host headers and request paths never
//! panic, and a match hands the guest the request's path (or, with
//! `strip_prefix`, a path starting with `/`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmhost::model::router::RouterBuilder;

fuzz_target!(|input: (Vec<(String, bool)>, Option<String>, String)| {
    let (routes, host, path) = input;
    let mut builder = RouterBuilder::default();
    for (index, (route, strip)) in routes.iter().take(16).enumerate() {
        let _ = builder.add(index, &format!("p{index}"), route, &[], *strip);
    }
    let router = builder.build();
    let found = router.route(host.as_deref(), &path);
    // Requests reach the router in origin form; only then do the invariants hold.
    let (Some(found), true) = (found, path.starts_with('/')) else {
        return;
    };
    let strip = routes.get(found.project).is_some_and(|(_, strip)| *strip);
    if strip {
        assert!(found.guest_path.starts_with('/'), "{found:?}");
    } else {
        assert_eq!(found.guest_path, path);
    }
});
