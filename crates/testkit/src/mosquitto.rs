//! A real Mosquitto broker for the uplink tests: TLS with client certificates
//! (`require_certificate`, `use_identity_as_username`), a per-gateway ACL and a `center`
//! identity that reads everything, on a loopback port chosen at run time. Plus
//! `mosquitto_sub` / `mosquitto_pub` as the center's (different) MQTT client.
//!
//! [`Broker::start_city`] starts the broker a city runs for pairing instead: the PKI comes from
//! a real center state directory (`porchlight-center ca init`, the library's
//! [`porchlight_center::ca`]), the mutual-TLS listener plus a **pairing listener** (TLS
//! server-auth only, the bootstrap account from `config/mosquitto/pairing.passwd`) on a second
//! run-time port, the shipped ACL `config/mosquitto/acl`, and optionally the center's CRL as
//! `crlfile`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::pki::{Ca, Identity, Validity};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// Fails loudly when Mosquitto is missing.
pub fn require_mosquitto() {
    for bin in [
        MOSQUITTO,
        "/usr/bin/mosquitto_sub",
        "/usr/bin/mosquitto_pub",
    ] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: the uplink tests need a real broker. Install it with \
             `apt-get install mosquitto mosquitto-clients`."
        );
    }
}

/// A running broker with its PKI.
pub struct Broker {
    child: Option<Child>,
    /// Its directory (config, certificates, persistence, logs).
    pub dir: tempfile::TempDir,
    /// Listening port on 127.0.0.1.
    pub port: u16,
    /// The city CA.
    pub ca: Ca,
    /// The center's client identity (CN `center`).
    pub center: Identity,
    starts: u32,
    /// With [`Broker::start_city`]: the pairing listener and the center's state directory.
    pub city: Option<City>,
}

/// What [`Broker::start_city`] adds.
pub struct City {
    /// The pairing listener's port on 127.0.0.1 (TLS server-auth, bootstrap password).
    pub pairing_port: u16,
    /// The center's state directory (`ca.pem`, `ca.key`, registry, `crl.pem`): pass it as
    /// `porchlight-center … --dir`.
    pub dir: PathBuf,
    /// The city CA the broker trusts (`dir/ca.pem`), also what a box gets at pairing.
    pub ca_file: PathBuf,
    /// Whether the broker was started with `crlfile dir/crl.pem`.
    pub crl: bool,
}

/// Options of [`Broker::start_city`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CityOptions {
    /// Start with `crlfile` (the center's `crl.pem`; an empty CRL is issued first).
    pub crl: bool,
}

impl Broker {
    /// Generates the PKI, writes the config and ACL, starts Mosquitto and waits for its port.
    pub fn start() -> Broker {
        require_mosquitto();
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(dir.path(), "city");
        let server = ca.server(dir.path(), "server");
        let center = ca.client(dir.path(), "center", Validity::Current);
        let port = super::free_port();
        let acl = dir.path().join("acl");
        std::fs::write(
            &acl,
            "user center\ntopic read porchlight/v1/#\ntopic write porchlight/v1/gw/+/request\n\npattern readwrite porchlight/v1/gw/%u/#\n",
        )
        .unwrap();
        let conf = format!(
            "per_listener_settings false\n\
             allow_anonymous false\n\
             user root\n\
             log_dest stderr\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             connection_messages true\n\
             persistence true\n\
             persistence_location {dir}/\n\
             autosave_interval 1\n\
             max_queued_messages 100000\n\
             acl_file {acl}\n\
             listener {port} 127.0.0.1\n\
             cafile {ca}\n\
             certfile {cert}\n\
             keyfile {key}\n\
             require_certificate true\n\
             use_identity_as_username true\n",
            dir = dir.path().display(),
            acl = acl.display(),
            ca = ca.pem_file.display(),
            cert = server.cert.display(),
            key = server.key.display(),
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let mut b = Broker {
            child: None,
            dir,
            port,
            ca,
            center,
            starts: 0,
            city: None,
        };
        b.spawn();
        b
    }

    /// A city broker for pairing (see the module doc). `ca` is then a stranger CA the broker
    /// does **not** trust (handy for refusal tests); the trusted one is [`Broker::ca_file`],
    /// and [`Broker::identity`] issues from it.
    pub fn start_city(opts: CityOptions) -> Broker {
        use porchlight_center::ca::{self, CaCommand, ClientArgs, DirArg, InitArgs, ServerArgs};
        require_mosquitto();
        let dir = tempfile::tempdir().unwrap();
        let center_dir = dir.path().join("center");
        let d = || DirArg {
            dir: center_dir.clone(),
        };
        ca::run(ca::Args {
            command: CaCommand::Init(InitArgs {
                dir: d(),
                name: "Test city CA".into(),
                years: 20,
            }),
        })
        .expect("ca init");
        ca::run(ca::Args {
            command: CaCommand::IssueServer(ServerArgs {
                dir: d(),
                dns: vec!["localhost".into()],
                ip: vec!["127.0.0.1".parse().unwrap()],
                out: dir.path().join("server"),
                days: 30,
            }),
        })
        .expect("ca issue-server");
        ca::run(ca::Args {
            command: CaCommand::IssueClient(ClientArgs {
                dir: d(),
                cn: "center".into(),
                out: Some(dir.path().join("center")),
                days: 30,
            }),
        })
        .expect("ca issue-client");
        if opts.crl {
            porchlight_center::revoke::run(porchlight_center::revoke::Args {
                dir: d(),
                gw: None,
                crl_only: true,
                crl_days: 30,
            })
            .expect("empty CRL");
        }
        let config_dir = super::repo_root().join("config/mosquitto");
        let ca_file = center_dir.join("ca.pem");
        let port = super::free_port();
        let pairing_port = loop {
            let p = super::free_port();
            if p != port {
                break p;
            }
        };
        let crl = if opts.crl {
            format!("crlfile {}\n", center_dir.join("crl.pem").display())
        } else {
            String::new()
        };
        let conf = format!(
            "per_listener_settings false\n\
             allow_anonymous false\n\
             user root\n\
             log_dest stderr\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             connection_messages true\n\
             persistence true\n\
             persistence_location {dir}/\n\
             autosave_interval 1\n\
             max_queued_messages 100000\n\
             set_tcp_nodelay true\n\
             password_file {passwd}\n\
             acl_file {acl}\n\
             listener {port} 127.0.0.1\n\
             cafile {ca}\n\
             certfile {dir}/server.pem\n\
             keyfile {dir}/server.key\n\
             require_certificate true\n\
             use_identity_as_username true\n\
             {crl}\
             listener {pairing_port} 127.0.0.1\n\
             cafile {ca}\n\
             certfile {dir}/server.pem\n\
             keyfile {dir}/server.key\n\
             require_certificate false\n",
            dir = dir.path().display(),
            passwd = config_dir.join("pairing.passwd").display(),
            acl = config_dir.join("acl").display(),
            ca = ca_file.display(),
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let center = Identity {
            cert: dir.path().join("center.pem"),
            key: dir.path().join("center.key"),
        };
        let stranger = Ca::new(dir.path(), "stranger");
        let mut b = Broker {
            child: None,
            dir,
            port,
            ca: stranger,
            center,
            starts: 0,
            city: Some(City {
                pairing_port,
                dir: center_dir,
                ca_file,
                crl: opts.crl,
            }),
        };
        b.spawn();
        b
    }

    /// The broker's process id while it runs (benchmarks read its CPU time from /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The CA the broker trusts (the city's in [`Broker::start_city`], else `ca.pem_file`).
    pub fn ca_file(&self) -> PathBuf {
        match &self.city {
            Some(c) => c.ca_file.clone(),
            None => self.ca.pem_file.clone(),
        }
    }

    /// The pairing listener's port (panics without [`Broker::start_city`]).
    pub fn pairing_port(&self) -> u16 {
        self.city.as_ref().expect("a city broker").pairing_port
    }

    /// `mqtts://127.0.0.1:PAIRING_PORT`.
    pub fn pairing_url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.pairing_port())
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.path().join(format!("broker-{}.log", self.starts)))
                .unwrap();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let ports = [Some(self.port), self.city.as_ref().map(|c| c.pairing_port)];
        while ports
            .iter()
            .flatten()
            .any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err())
        {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("mosquitto exited with {st}:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto not listening:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker (SIGTERM, so it saves its persistence file).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, config and persistence.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }

    /// All broker logs so far.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.starts {
            out.push_str(
                &std::fs::read_to_string(self.dir.path().join(format!("broker-{i}.log")))
                    .unwrap_or_default(),
            );
        }
        out
    }

    /// A client identity signed by the city CA.
    pub fn identity(&self, cn: &str) -> Identity {
        let Some(city) = &self.city else {
            return self.ca.client(self.dir.path(), cn, Validity::Current);
        };
        use porchlight_center::{ca::CityCa, store::CenterDir};
        let ca = CityCa::load(&CenterDir::new(&city.dir)).expect("city CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let now = jiff::Timestamp::now().as_second();
        let issued = ca.issue_client(cn, &key, now, 30 * 86_400).unwrap();
        let id = Identity {
            cert: self.dir.path().join(format!("{cn}.pem")),
            key: self.dir.path().join(format!("{cn}.key")),
        };
        std::fs::write(&id.cert, issued.pem).unwrap();
        std::fs::write(&id.key, key.serialize_pem()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&id.key, std::fs::Permissions::from_mode(0o600)).unwrap();
        id
    }

    /// `mqtts://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.port)
    }

    fn tls_args(&self, id: Option<&Identity>) -> Vec<String> {
        let mut a = vec![
            "-h".into(),
            "localhost".into(),
            "-p".into(),
            self.port.to_string(),
            "--cafile".into(),
            self.ca_file().display().to_string(),
        ];
        if let Some(id) = id {
            a.extend([
                "--cert".into(),
                id.cert.display().to_string(),
                "--key".into(),
                id.key.display().to_string(),
            ]);
        }
        a
    }

    /// Starts `mosquitto_sub` as `id` on `topic`, printing `retained topic payload` per line.
    pub fn subscribe(&self, id: Option<&Identity>, topic: &str, extra: &[&str]) -> Sub {
        let mut child = Command::new("mosquitto_sub")
            .args(self.tls_args(id))
            .args(["-t", topic, "-q", "1", "-F", "%r %t %p"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mosquitto_sub");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        let err = Arc::new(Mutex::new(String::new()));
        let e = err.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                e.lock().unwrap().push_str(&line);
                e.lock().unwrap().push('\n');
            }
        });
        Sub { child, lines, err }
    }

    /// Runs `mosquitto_sub` once: `-C count -W secs`; returns its output.
    pub fn sub_once(&self, id: Option<&Identity>, topic: &str, count: u32, secs: u32) -> Output {
        Command::new("mosquitto_sub")
            .args(self.tls_args(id))
            .args(["-t", topic, "-q", "1", "-F", "%r %t %p"])
            .args(["-C", &count.to_string(), "-W", &secs.to_string()])
            .output()
            .expect("run mosquitto_sub")
    }

    /// Runs `mosquitto_pub` as `id`.
    pub fn publish(
        &self,
        id: Option<&Identity>,
        topic: &str,
        payload: &str,
        retain: bool,
    ) -> Output {
        let mut c = Command::new("mosquitto_pub");
        c.args(self.tls_args(id))
            .args(["-t", topic, "-m", payload, "-q", "1"]);
        if retain {
            c.arg("-r");
        }
        c.output().expect("run mosquitto_pub")
    }

    /// The directory for extra files (other CAs, configs).
    pub fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- mosquitto ---\n{}", self.logs());
        }
    }
}

/// A running `mosquitto_sub`.
pub struct Sub {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<String>>,
}

/// One received message.
#[derive(Clone, Debug)]
pub struct Msg {
    /// Retained flag.
    pub retained: bool,
    /// Topic.
    pub topic: String,
    /// Payload (text).
    pub payload: String,
}

impl Sub {
    /// Everything received so far.
    pub fn messages(&self) -> Vec<Msg> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| {
                let (r, rest) = l.split_once(' ')?;
                let (t, p) = rest.split_once(' ').unwrap_or((rest, ""));
                Some(Msg {
                    retained: r == "1",
                    topic: t.to_owned(),
                    payload: p.to_owned(),
                })
            })
            .collect()
    }

    /// Waits until `cond` holds on the messages so far; panics with them after `timeout`.
    pub fn wait(&self, timeout: Duration, what: &str, cond: impl Fn(&[Msg]) -> bool) -> Vec<Msg> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.messages();
            if cond(&m) {
                return m;
            }
            if Instant::now() > deadline {
                let tail: Vec<_> = m.iter().rev().take(10).collect();
                panic!(
                    "timed out waiting for {what}; {} messages, last: {tail:#?}\nstderr: {}",
                    m.len(),
                    self.err.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
