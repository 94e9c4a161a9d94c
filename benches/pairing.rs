//! Pairing time (issue 5): from `porchlight pair --code …` to the box's first heartbeat under
//! its new identity, on this machine, with real parts: Mosquitto with the pairing and the
//! mutual-TLS listener, `porchlight-center serve` answering the CSR, the release daemon.
//!
//! Measured: the wall clock just before the CLI starts → the `ts` the box put in its first
//! heartbeat (same machine, same clock), and how long the `pair` command itself took (key
//! generation, CSR, round trip through the broker and the center, identity stored, link
//! started). A fresh daemon per pairing; the center and broker stay up.
//!
//! Run: `cargo bench --bench pairing` (env `PORCHLIGHT_BENCH_PAIRINGS`, default 10).

use porchlight_testkit as support;

use std::process::Command;
use std::time::Duration;

use support::mosquitto::{Broker, CityOptions};
use support::Daemon;

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn stats(mut v: Vec<i64>) -> (i64, i64, i64) {
    v.sort_unstable();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    let n: usize = std::env::var("PORCHLIGHT_BENCH_PAIRINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let broker = Broker::start_city(CityOptions::default());
    let center_dir = broker.city.as_ref().unwrap().dir.clone();
    let center = support::center::center_bin();
    let mut serve_cmd = support::center::center_command(&broker);
    serve_cmd
        .arg("serve")
        .arg("--dir")
        .arg(&center_dir)
        .args(["--public-broker", &broker.url()]);
    let mut serve = support::center::Running::spawn(serve_cmd);
    serve.wait_stderr("Serving ", Duration::from_secs(20));
    let out = Command::new(center)
        .args(["codes", "issue", "--dir"])
        .arg(&center_dir)
        .args(["--count", &n.to_string()])
        .output()
        .expect("codes issue");
    let codes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        codes.len(),
        n,
        "codes issue: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let config = format!(
        "[pairing]\nbroker = \"{}\"\nca_file = {:?}\n",
        broker.pairing_url(),
        broker.ca_file()
    );
    let hb = broker.subscribe(Some(&broker.center), "porchlight/v1/gw/+/heartbeat", &[]);
    let mut cli_ms = Vec::new();
    let mut first_hb_ms = Vec::new();
    for code in &codes {
        let d = Daemon::start(&config);
        let t0 = now_ms();
        let out = d.cli(&["pair", "--code", code, "--json"]);
        let t_cli = now_ms() - t0;
        assert!(
            out.status.success(),
            "pair failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pair --json");
        let gw = v["gateway_id"].as_str().unwrap().to_owned();
        let topic = format!("porchlight/v1/gw/{gw}/heartbeat");
        let msgs = hb.wait(Duration::from_secs(30), "first heartbeat", |m| {
            m.iter().any(|m| m.topic == topic)
        });
        let first = msgs.iter().find(|m| m.topic == topic).unwrap();
        let ts = serde_json::from_str::<serde_json::Value>(&first.payload).unwrap()["ts"]
            .as_i64()
            .unwrap();
        cli_ms.push(t_cli);
        first_hb_ms.push(ts - t0);
        drop(d);
    }
    drop(serve);
    let (a, b, c) = stats(cli_ms);
    let (x, y, z) = stats(first_hb_ms);
    println!("pairings: {n} (fresh daemon each, release build, this machine)");
    println!("`porchlight pair` command:        min {a} ms, median {b} ms, max {c} ms");
    println!("pair start -> first heartbeat:    min {x} ms, median {y} ms, max {z} ms");
}
