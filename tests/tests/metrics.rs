//! The operator's view of real processes on 127.0.0.1: `solo-node --metrics` serves
//! `/metrics` and `/status` (a SIGKILL of the singleton's owner moves the member gauges, the
//! membership counters and the failover histogram as it should, and every survivor's
//! `/status` names the new owner; `/metrics` is read with a Prometheus text parser, as a
//! Prometheus server would), and `solo-node status` prints from a shell what the nodes see.
//!
//! Every wait is bounded; no timing is asserted beyond "it happened".

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tests::scrape::{get, scrape, value};
use tests::{
    Node, cluster, cluster_specs, dump_all, now_us, run_to_exit, settled_owner, solo_node_binary,
    wait_any, wait_full_mesh,
};

const SINGLETON: &str = "s";
const FORM: Duration = Duration::from_secs(20);

/// The owner every child of `/status` names, by child id.
fn owners(addr: SocketAddr) -> serde_json::Value {
    let (code, body) = get(addr, "/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

fn owner_of(status: &serde_json::Value, child: &str) -> Option<String> {
    status["children"]
        .as_array()?
        .iter()
        .find(|c| c["id"] == child)?["owner"]
        .as_str()
        .map(str::to_owned)
}

/// Polls until `check` holds, for up to `within`.
fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

#[test]
fn metrics_and_status_follow_a_sigkill_failover() {
    let binary = solo_node_binary(false);
    let mut specs = cluster_specs(3, "metrics", &[SINGLETON]);
    for spec in &mut specs {
        spec.extra = vec!["--metrics".into(), "127.0.0.1:0".into()];
    }
    let mut nodes: Vec<Node> = specs
        .into_iter()
        .map(|spec| Node::start(&binary, spec))
        .collect();
    let endpoints: Vec<SocketAddr> = nodes
        .iter()
        .map(|node| {
            let ready = node.wait_seen(FORM, |e| e.event == "ready").expect("ready");
            ready
                .field("metrics")
                .and_then(|a| a.parse().ok())
                .expect("`ready` names the metrics address")
        })
        .collect();
    assert!(wait_full_mesh(&nodes, FORM), "{}", dump_all(&nodes));
    let owner = settled_owner(&nodes, SINGLETON, FORM).expect("an owner");
    let owner_name = nodes[owner].spec.name.clone();

    // Before: three alive everywhere, every `/status` names the owner, and only the owner's
    // says an instance runs there.
    for (i, &endpoint) in endpoints.iter().enumerate() {
        assert!(
            eventually(FORM, || value(
                &scrape(endpoint),
                "solo_members",
                Some(("state", "alive"))
            ) == 3.0),
            "n{} sees three alive members",
            i + 1
        );
        let status = owners(endpoint);
        assert_eq!(
            owner_of(&status, SINGLETON).as_deref(),
            Some(owner_name.as_str())
        );
        assert_eq!(status["members"].as_array().map(Vec::len), Some(3));
        let running_here = &status["children"][0]["running_here"];
        assert_eq!(!running_here.is_null(), i == owner, "{status}");
        assert!(value(&scrape(endpoint), "solo_transport_frames_total", None) > 0.0);
    }

    let killed = nodes.remove(owner);
    let survivors: Vec<SocketAddr> = (0..3)
        .filter(|&i| i != owner)
        .map(|i| endpoints[i])
        .collect();
    let killed_at = now_us();
    killed.signal("KILL");
    let refs: Vec<&Node> = nodes.iter().collect();
    let (new_owner, _) = wait_any(&refs, FORM, |e| {
        e.event == "worker_started" && e.field("name") == Some(SINGLETON) && e.ts_us > killed_at
    })
    .unwrap_or_else(|| panic!("no takeover:\n{}", dump_all(&nodes)));
    let new_owner_name = nodes[new_owner].spec.name.clone();

    // After: two alive and one down on each survivor, one `down` counted, the failover
    // observed once by the node that took over (and by no other), and `/status` agreeing.
    for (j, &endpoint) in survivors.iter().enumerate() {
        assert!(
            eventually(FORM, || {
                let s = scrape(endpoint);
                value(&s, "solo_members", Some(("state", "alive"))) == 2.0
                    && value(&s, "solo_members", Some(("state", "down"))) == 1.0
                    && value(&s, "solo_membership_events_total", Some(("event", "down"))) == 1.0
            }),
            "survivor {j}: {}",
            get(endpoint, "/metrics").1
        );
        let failovers = value(&scrape(endpoint), "solo_failover_seconds_count", None);
        let took_over = j == new_owner;
        assert_eq!(failovers, if took_over { 1.0 } else { 0.0 }, "survivor {j}");
        if took_over {
            let seconds = value(&scrape(endpoint), "solo_failover_seconds_sum", None);
            assert!(seconds > 0.0 && seconds < 10.0, "{seconds}");
        }
        assert!(
            eventually(FORM, || owner_of(&owners(endpoint), SINGLETON).as_deref()
                == Some(new_owner_name.as_str())),
            "survivor {j}: {}",
            owners(endpoint)
        );
    }

    // Anything but a GET of the two paths is refused, politely.
    assert_eq!(get(survivors[0], "/nothing").0, 404);
    drop(killed);
}

#[test]
fn solo_node_status_prints_the_members_and_who_runs_each_singleton() {
    let binary = solo_node_binary(false);
    let nodes = cluster(&binary, 3, "status", &[SINGLETON]);
    assert!(wait_full_mesh(&nodes, FORM), "{}", dump_all(&nodes));
    let owner = settled_owner(&nodes, SINGLETON, FORM).expect("an owner");
    let seed = nodes[0].spec.addr.to_string();
    let cookie = nodes[0].spec.cookie.clone();
    let ask = |json: bool| {
        let mut args = vec!["status", "--seed", &seed, "--cookie", &cookie];
        if json {
            args.push("--json");
        }
        let done = run_to_exit(&binary, &args, FORM).expect("status exits");
        assert!(done.status.success(), "{}", done.stderr);
        done.stdout
    };
    let view: serde_json::Value = serde_json::from_str(&ask(true)).expect("JSON");
    assert_eq!(
        owner_of(&view, SINGLETON).as_deref(),
        Some(nodes[owner].spec.name.as_str()),
        "{view}"
    );
    let table = ask(false);
    let row = table
        .lines()
        .find(|line| line.starts_with(&format!("{SINGLETON} ")))
        .unwrap_or_else(|| panic!("a row for the singleton:\n{table}"));
    assert!(row.ends_with(&nodes[owner].spec.name), "{table}");
    for node in &nodes {
        assert!(
            table
                .lines()
                .any(|line| line.starts_with(&format!("{} ", node.spec.name))),
            "{table}"
        );
    }
}
