//! The sharing service with a manual clock: ask expiry, grant expiry and the replies and
//! audit entries they produce, in milliseconds of test time (no broker: the uplink is opened
//! but never run, so replies stay in its outbox where the test reads them).

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;

use super::*;
use crate::audit::{AuditKind, Filter};
use crate::clock::Clock;
use crate::consent::{CameraRules, Mode};
use crate::protocol::request::{sign_request, Claims, RequestKind};
use crate::uplink::outbox::{Payload, OUTBOX_TREE};
use crate::uplink::{NoHealth, Uplink, UplinkSettings};

const T0: i64 = 1_800_000_000_000;
const GW: &str = "gw-test";
const ASK: Duration = Duration::from_secs(600);

struct Rig {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    sharing: Arc<Sharing>,
    clock: Clock,
    key: SigningKey,
    _shutdown: crate::shutdown::ShutdownTrigger,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(
        &dir.path().join("data"),
        crate::store::StoreOptions {
            quota_bytes: 16 << 20,
            retention: Duration::from_secs(3600),
            cache_capacity: 1 << 20,
        },
    )
    .unwrap();
    let store = Arc::new(store);
    // A certificate whose CN is the gateway id: all the uplink reads before it runs.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, GW);
    let cert = params.self_signed(&key).unwrap();
    let cert_file = dir.path().join("cert.pem");
    std::fs::write(&cert_file, cert.pem()).unwrap();
    let settings = UplinkSettings::new(
        "127.0.0.1",
        1,
        cert_file.clone(),
        cert_file,
        dir.path().join("key.pem"),
    );
    let (_uplink, handle) = Uplink::open(settings, store.db(), Arc::new(NoHealth)).unwrap();
    let (trigger, shutdown) = crate::shutdown::Shutdown::new();
    let porch = crate::ingest::spec::CameraSpec {
        id: "porch".into(),
        name: "porch".into(),
        url: "rtsp://127.0.0.1:1/p".parse().unwrap(),
        substream_url: None,
        credentials: None,
        record: crate::ingest::spec::Record::Off,
        audio: false,
        transport: crate::ingest::spec::Transport::Tcp,
    };
    let cameras = crate::cameras::CameraSet::open(
        &[porch],
        crate::cameras::registry::Registry::open(store.db()).unwrap(),
        store.clone(),
        crate::ingest::IngestConfig::default(),
        shutdown,
    );
    let clock = Clock::manual(T0);
    let audit = Arc::new(AuditLog::open_current(store.db(), T0).unwrap());
    let sharing = Sharing::open(
        store.clone(),
        audit,
        cameras,
        SharingOptions {
            ask_timeout: ASK,
            live_max_bitrate: 4_000_000,
            clock: clock.clone(),
            unverified_summary_every: Duration::from_secs(60),
            reject_issued_before: None,
        },
    )
    .unwrap();
    let signing = SigningKey::from_bytes(&[9; 32]);
    let verifier = RequestVerifier::new(
        signing.verifying_key(),
        GW,
        crate::sharing::request::VerifyOptions::default(),
    );
    sharing.attach(SharingLink {
        uplink: handle,
        verifier: Some(verifier),
        box_key: None,
    });
    Rig {
        _dir: dir,
        store,
        sharing,
        clock,
        key: signing,
        _shutdown: trigger,
    }
}

impl Rig {
    fn request(&self, jti: &str, kind: RequestKind) {
        let now_s = self.clock.now_ms() / 1000;
        let live = kind == RequestKind::Live;
        let claims = Claims {
            jti: jti.into(),
            iat: now_s,
            exp: now_s + 300,
            gw: GW.into(),
            kind,
            camera: "porch".into(),
            from: (!live).then_some(now_s - 60),
            to: (!live).then_some(now_s - 30),
            duration_s: live.then_some(60),
            target: None,
            reason: Some("test".into()),
            case: None,
            requester: Some("officer 1".into()),
            emergency: false,
        };
        self.sharing
            .handle_request(sign_request(&claims, &self.key).as_bytes())
            .unwrap();
    }

    /// The replies queued for the center, in order.
    fn replies(&self) -> Vec<Reply> {
        let tree = self.store.db().open_tree(OUTBOX_TREE).unwrap();
        tree.iter()
            .values()
            .filter_map(|v| crate::uplink::outbox::Record::decode(&v.unwrap()))
            .filter(|r| r.topic.ends_with("/reply"))
            .map(|r| match r.payload {
                Payload::Inline(b) => serde_json::from_slice(&b).unwrap(),
                other => panic!("reply not inline: {other:?}"),
            })
            .collect()
    }

    fn audit_kinds(&self) -> Vec<AuditKind> {
        self.sharing
            .audit()
            .list(&Filter::default())
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }
}

fn statuses(replies: &[Reply]) -> Vec<(String, ReplyStatus)> {
    replies
        .iter()
        .map(|r| (r.request_id.clone(), r.status))
        .collect()
}

#[tokio::test]
async fn an_unanswered_ask_expires_exactly_at_its_timeout_on_the_service_clock() {
    let r = rig();
    let rules = CameraRules {
        live: Mode::Ask,
        ..CameraRules::default()
    };
    r.sharing.set_rules("porch", rules).unwrap();
    r.request("ask-1", RequestKind::Live);
    let replies = r.replies();
    assert_eq!(statuses(&replies), [("ask-1".into(), ReplyStatus::Pending)]);
    assert_eq!(replies[0].until, Some(T0 + ASK.as_millis() as i64));
    assert_eq!(replies[0].ts, T0, "stamped by the service clock");

    // One millisecond before the timeout: still pending.
    r.clock.advance(ASK.as_millis() as i64 - 1);
    r.sharing.tick().unwrap();
    assert_eq!(r.replies().len(), 1);
    assert_eq!(r.sharing.requests()["pending"].as_array().unwrap().len(), 1);

    // At the timeout: expired, replied and audited; nothing left to approve.
    r.clock.advance(1);
    r.sharing.tick().unwrap();
    let replies = r.replies();
    assert_eq!(
        statuses(&replies),
        [
            ("ask-1".into(), ReplyStatus::Pending),
            ("ask-1".into(), ReplyStatus::Expired)
        ]
    );
    assert!(r.sharing.requests()["pending"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(r.sharing.approve("ask-1").is_err());
    assert!(r.audit_kinds().contains(&AuditKind::Decision));
}

#[tokio::test]
async fn an_always_live_grant_ends_at_its_until_and_not_before() {
    let r = rig();
    let rules = CameraRules {
        live: Mode::Always,
        max_live_s: 30,
        ..CameraRules::default()
    };
    r.sharing.set_rules("porch", rules).unwrap();
    // Asks 60 s; the rule caps it at 30 s.
    r.request("live-1", RequestKind::Live);
    let granted = r.replies();
    assert_eq!(
        statuses(&granted),
        [("live-1".into(), ReplyStatus::Granted)]
    );
    assert_eq!(granted[0].until, Some(T0 + 30_000));
    assert_eq!(r.sharing.grants_active(), 1);

    r.clock.advance(29_999);
    r.sharing.tick().unwrap();
    assert_eq!(r.sharing.grants_active(), 1);
    r.clock.advance(1);
    r.sharing.tick().unwrap();
    assert_eq!(r.sharing.grants_active(), 0);
    assert_eq!(
        statuses(&r.replies()).last(),
        Some(&("live-1".into(), ReplyStatus::Expired))
    );
    let kinds = r.audit_kinds();
    assert!(kinds.contains(&AuditKind::GrantStart) && kinds.contains(&AuditKind::GrantEnd));
}

#[tokio::test]
async fn a_request_whose_exp_passed_on_the_service_clock_is_rejected() {
    let r = rig();
    r.sharing
        .set_rules(
            "porch",
            CameraRules {
                live: Mode::Always,
                ..CameraRules::default()
            },
        )
        .unwrap();
    let now_s = T0 / 1000;
    let claims = Claims {
        jti: "late-1".into(),
        iat: now_s,
        exp: now_s + 300,
        gw: GW.into(),
        kind: RequestKind::Live,
        camera: "porch".into(),
        from: None,
        to: None,
        duration_s: Some(10),
        target: None,
        reason: Some("test".into()),
        case: None,
        requester: Some("officer".into()),
        emergency: false,
    };
    let token = sign_request(&claims, &r.key);
    // Delivered after its expiry (the box was off, the broker held it).
    r.clock.advance(301_000);
    r.sharing.handle_request(token.as_bytes()).unwrap();
    let replies = r.replies();
    assert_eq!(
        statuses(&replies),
        [("late-1".into(), ReplyStatus::Rejected)]
    );
    assert_eq!(replies[0].reason.as_deref(), Some("expired"));
    assert_eq!(r.sharing.grants_active(), 0);
}
