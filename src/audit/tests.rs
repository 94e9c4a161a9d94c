//! Append, verify, tamper, reopen and concurrency tests of the audit chain.

use std::sync::Arc;

use serde_json::json;

use super::*;

const T0: i64 = 1_700_000_000_000;

fn temp_db() -> sled::Db {
    sled::Config::new().temporary(true).open().unwrap()
}

/// Opens sled at `path`, retrying while a just-dropped `Db`'s background thread still holds
/// its file lock (sled releases it asynchronously).
fn open_retry(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("cannot reopen {}: {e}", path.display()),
        }
    }
}

fn fill(log: &AuditLog, n: u64) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            log.append(
                NewEntry::new(T0 + i as i64, AuditKind::RequestReceived, Actor::Center)
                    .request(format!("r{i}"))
                    .camera("porch")
                    .detail(json!({"reason": "test", "n": i})),
            )
            .unwrap()
        })
        .collect()
}

fn broken_at(r: Result<VerifyReport, AuditError>) -> (u64, Break) {
    match r {
        Err(AuditError::Broken { seq, problem }) => (seq, problem),
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

/// Overwrites the raw value of entry `seq`.
fn put_raw(tree: &sled::Tree, seq: u64, e: &Entry) {
    tree.insert(key(seq), e.to_json_bytes().unwrap()).unwrap();
}

#[test]
fn canonical_encoding_is_exact() {
    let e = Entry {
        seq: 1,
        ts: T0,
        kind: AuditKind::RequestReceived,
        actor: Actor::Center,
        request_id: Some("r1".into()),
        camera: Some("porch".into()),
        detail: json!({"z": 1, "a": {"y": [true, null, -3], "b": "x\"\\\n\u{1}é/"}})
            .as_object()
            .unwrap()
            .clone(),
        prev: ZERO_HASH.into(),
        hash: String::new(),
    };
    let c = String::from_utf8(e.canonical().unwrap()).unwrap();
    assert_eq!(
        c,
        format!(
            "{{\"actor\":\"center\",\"camera\":\"porch\",\"detail\":{{\"a\":{{\"b\":\"x\\\"\\\\\\n\\u0001é/\",\"y\":[true,null,-3]}},\"z\":1}},\"kind\":\"request_received\",\"prev\":\"{ZERO_HASH}\",\"request_id\":\"r1\",\"seq\":1,\"ts\":{T0}}}"
        )
    );
    let mut h = Sha256::new();
    h.update([0u8; 32]);
    h.update(c.as_bytes());
    assert_eq!(e.compute_hash().unwrap(), hex::encode(h.finalize()));
}

#[test]
fn append_and_verify() {
    let log = AuditLog::open_in(&temp_db()).unwrap();
    assert!(log.is_empty());
    assert_eq!(
        log.latest(),
        Head {
            seq: 0,
            hash: ZERO_HASH.into()
        }
    );
    assert_eq!(log.verify().unwrap().entries, 0);
    let es = fill(&log, 5);
    assert_eq!(es[0].seq, 1);
    assert_eq!(es[0].prev, ZERO_HASH);
    for w in es.windows(2) {
        assert_eq!(w[1].prev, w[0].hash);
        assert_eq!(w[1].seq, w[0].seq + 1);
    }
    let head = log.latest();
    assert_eq!(head.seq, 5);
    assert_eq!(head.hash, es[4].hash);
    let r = log.verify().unwrap();
    assert_eq!(
        (r.entries, r.last_seq, r.last_hash.clone()),
        (5, 5, es[4].hash.clone())
    );
    log.verify_against(3, &es[2].hash).unwrap();
    log.verify_against(0, ZERO_HASH).unwrap();
    // Stored bytes parse back to the same entry, and published JSON is that too.
    assert_eq!(log.get(2).unwrap().unwrap(), es[1]);
    let published: Entry = serde_json::from_slice(&es[1].to_json_bytes().unwrap()).unwrap();
    assert_eq!(published.compute_hash().unwrap(), es[1].hash);
}

#[test]
fn invalid_detail_is_refused_and_chain_unchanged() {
    let log = AuditLog::open_in(&temp_db()).unwrap();
    let bad = [
        json!("not an object"),
        json!({"f": 1.5}),
        json!({"big": 9_007_199_254_740_992u64}),
        json!({"ключ": 1}),
        json!({"s": "x".repeat(MAX_DETAIL_BYTES)}),
    ];
    for (i, d) in bad.into_iter().enumerate() {
        let r = log.append(NewEntry::new(T0, AuditKind::Pause, Actor::Resident).detail(d));
        assert!(
            matches!(r, Err(AuditError::InvalidDetail(_))),
            "case {i}: {r:?}"
        );
    }
    assert!(log.is_empty());
    log.append(
        NewEntry::new(T0, AuditKind::Pause, Actor::Resident)
            .detail(json!({"max": 9_007_199_254_740_991u64, "min": -9_007_199_254_740_991i64})),
    )
    .unwrap();
    log.verify().unwrap();
}

#[test]
fn tamper_edit_detail_is_detected_at_its_seq() {
    let db = temp_db();
    let log = AuditLog::open_in(&db).unwrap();
    let es = fill(&log, 5);
    let tree = db.open_tree(TREE).unwrap();
    let mut e = es[2].clone();
    e.detail.insert("reason".into(), json!("nothing to see"));
    put_raw(&tree, 3, &e);
    assert_eq!(broken_at(log.verify()), (3, Break::HashMismatch));
}

#[test]
fn tamper_edit_with_recomputed_hash_breaks_the_next_link() {
    let db = temp_db();
    let log = AuditLog::open_in(&db).unwrap();
    let es = fill(&log, 5);
    let tree = db.open_tree(TREE).unwrap();
    let mut e = es[2].clone();
    e.camera = Some("garden".into());
    e.hash = e.compute_hash().unwrap();
    put_raw(&tree, 3, &e);
    assert_eq!(broken_at(log.verify()), (4, Break::PrevMismatch));
}

#[test]
fn tamper_each_field_is_detected() {
    type Edit = fn(&mut Entry);
    let edits: [(&str, Edit); 6] = [
        ("ts", |e| e.ts += 1),
        ("kind", |e| e.kind = AuditKind::Decision),
        ("actor", |e| e.actor = Actor::Resident),
        ("request_id", |e| e.request_id = None),
        ("camera", |e| e.camera = Some("x".into())),
        ("prev", |e| e.prev = "1".repeat(64)),
    ];
    for (name, edit) in edits {
        let db = temp_db();
        let log = AuditLog::open_in(&db).unwrap();
        let es = fill(&log, 3);
        let mut e = es[1].clone();
        edit(&mut e);
        put_raw(&db.open_tree(TREE).unwrap(), 2, &e);
        let (seq, _) = broken_at(log.verify());
        assert_eq!(seq, 2, "{name}");
    }
}

#[test]
fn tamper_delete_middle_is_a_gap() {
    let db = temp_db();
    let log = AuditLog::open_in(&db).unwrap();
    fill(&log, 5);
    db.open_tree(TREE).unwrap().remove(key(3)).unwrap();
    assert_eq!(broken_at(log.verify()), (4, Break::Missing { expected: 3 }));
}

#[test]
fn tamper_delete_first_is_a_bad_start() {
    let db = temp_db();
    let log = AuditLog::open_in(&db).unwrap();
    fill(&log, 3);
    db.open_tree(TREE).unwrap().remove(key(1)).unwrap();
    assert_eq!(broken_at(log.verify()), (2, Break::BadStart));
}

#[test]
fn tamper_delete_last_needs_the_anchor() {
    let db = temp_db();
    let log = AuditLog::open_in(&db).unwrap();
    let es = fill(&log, 5);
    let anchor = log.latest();
    db.open_tree(TREE).unwrap().remove(key(5)).unwrap();
    // The remaining chain is internally valid…
    assert_eq!(log.verify().unwrap().last_seq, 4);
    // …but not against the anchor the center holds.
    assert!(matches!(
        log.verify_against(anchor.seq, &anchor.hash),
        Err(AuditError::Truncated {
            anchor_seq: 5,
            last_seq: 4
        })
    ));
    assert_eq!(anchor.hash, es[4].hash);
}

#[test]
fn tamper_rewritten_chain_fails_the_anchor() {
    let db = temp_db();
    let log = AuditLog::open_in(&db).unwrap();
    let es = fill(&log, 4);
    let anchor = (3, es[2].hash.clone());
    // Rewrite the whole chain consistently from entry 2 on.
    let tree = db.open_tree(TREE).unwrap();
    let mut prev = es[0].hash.clone();
    for old in &es[1..] {
        let mut e = old.clone();
        e.detail.insert("reason".into(), json!("rewritten"));
        e.prev = prev;
        e.hash = e.compute_hash().unwrap();
        prev = e.hash.clone();
        put_raw(&tree, e.seq, &e);
    }
    log.verify().unwrap();
    assert!(matches!(
        log.verify_against(anchor.0, &anchor.1),
        Err(AuditError::AnchorMismatch { seq: 3 })
    ));
}

#[test]
fn tamper_reorder_is_detected() {
    let db = temp_db();
    let log = AuditLog::open_in(&db).unwrap();
    let es = fill(&log, 5);
    let tree = db.open_tree(TREE).unwrap();
    put_raw(&tree, 2, &es[2]);
    put_raw(&tree, 3, &es[1]);
    assert_eq!(
        broken_at(log.verify()),
        (3, Break::KeyMismatch { key_seq: 2 })
    );
    // Renumbered to fit their new keys, the links break instead.
    let (mut a, mut b) = (es[2].clone(), es[1].clone());
    a.seq = 2;
    b.seq = 3;
    put_raw(&tree, 2, &a);
    put_raw(&tree, 3, &b);
    assert_eq!(broken_at(log.verify()), (2, Break::PrevMismatch));
}

#[test]
fn tamper_insert_in_the_middle_is_detected() {
    let db = temp_db();
    let log = AuditLog::open_in(&db).unwrap();
    let es = fill(&log, 4);
    let tree = db.open_tree(TREE).unwrap();
    // Shift entries 3.. one up and forge a valid-looking entry 3 after entry 2.
    for old in es[2..].iter().rev() {
        let mut e = old.clone();
        e.seq += 1;
        put_raw(&tree, e.seq, &e);
    }
    let mut forged = es[2].clone();
    forged.detail.insert("reason".into(), json!("forged"));
    forged.hash = forged.compute_hash().unwrap();
    put_raw(&tree, 3, &forged);
    assert_eq!(broken_at(log.verify()), (4, Break::PrevMismatch));
}

#[test]
fn tamper_garbage_bytes_are_undecodable() {
    let db = temp_db();
    let log = AuditLog::open_in(&db).unwrap();
    fill(&log, 3);
    db.open_tree(TREE)
        .unwrap()
        .insert(key(2), &b"{\"seq\":2,"[..])
        .unwrap();
    assert_eq!(broken_at(log.verify()), (2, Break::Undecodable));
    assert!(matches!(
        log.list(&Filter::default()),
        Err(AuditError::Corrupt { seq: 2, .. })
    ));
}

#[test]
fn reopen_keeps_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let es = {
        let db = open_retry(dir.path());
        let log = AuditLog::open_in(&db).unwrap();
        fill(&log, 3)
    };
    let db = open_retry(dir.path());
    let log = AuditLog::open_in(&db).unwrap();
    assert_eq!(log.latest().seq, 3);
    assert_eq!(log.latest().hash, es[2].hash);
    let e = log
        .append(NewEntry::new(T0, AuditKind::Resume, Actor::Resident))
        .unwrap();
    assert_eq!(e.seq, 4);
    assert_eq!(e.prev, es[2].hash);
    assert_eq!(log.verify().unwrap().entries, 4);
}

#[test]
fn second_writer_on_the_same_tree_conflicts() {
    let db = temp_db();
    let a = AuditLog::open_in(&db).unwrap();
    let b = AuditLog::open_in(&db).unwrap();
    a.append(NewEntry::new(T0, AuditKind::Pause, Actor::Resident))
        .unwrap();
    assert!(matches!(
        b.append(NewEntry::new(T0, AuditKind::Resume, Actor::Resident)),
        Err(AuditError::Conflict { seq: 1 })
    ));
    a.verify().unwrap();
}

#[test]
fn concurrent_appends_keep_a_valid_chain() {
    let db = temp_db();
    let log = Arc::new(AuditLog::open_in(&db).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..50 {
                    log.append(
                        NewEntry::new(T0 + i, AuditKind::BytesSent, Actor::Gateway)
                            .detail(json!({"thread": t, "i": i})),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let r = log.verify().unwrap();
    assert_eq!((r.entries, r.last_seq), (200, 200));
    assert_eq!(log.latest().hash, r.last_hash);
}

#[test]
fn list_filters() {
    let log = AuditLog::open_in(&temp_db()).unwrap();
    fill(&log, 4);
    log.append(
        NewEntry::new(T0 + 100, AuditKind::Decision, Actor::Gateway)
            .request("r1")
            .camera("garden"),
    )
    .unwrap();
    let seqs = |f: Filter| -> Vec<u64> { log.list(&f).unwrap().iter().map(|e| e.seq).collect() };
    assert_eq!(seqs(Filter::default()), vec![1, 2, 3, 4, 5]);
    let cam = |c: &str| Some(c.to_owned());
    assert_eq!(
        seqs(Filter {
            camera: cam("garden"),
            ..Filter::default()
        }),
        vec![5]
    );
    assert_eq!(
        seqs(Filter {
            request_id: cam("r1"),
            ..Filter::default()
        }),
        vec![2, 5]
    );
    assert_eq!(
        seqs(Filter {
            kind: Some(AuditKind::Decision),
            ..Filter::default()
        }),
        vec![5]
    );
    assert_eq!(
        seqs(Filter {
            since_ms: Some(T0 + 2),
            ..Filter::default()
        }),
        vec![3, 4, 5]
    );
    assert_eq!(
        seqs(Filter {
            after_seq: Some(2),
            limit: Some(2),
            ..Filter::default()
        }),
        vec![3, 4]
    );
    assert_eq!(
        seqs(Filter {
            limit: Some(2),
            newest_first: true,
            ..Filter::default()
        }),
        vec![5, 4]
    );
}

#[test]
fn export_jsonl_and_csv() {
    let log = AuditLog::open_in(&temp_db()).unwrap();
    let es = fill(&log, 2);
    log.append(
        NewEntry::new(T0, AuditKind::ConsentRuleChanged, Actor::Resident)
            .camera("porch")
            .detail(json!({"note": "a, \"quoted\"\nline"})),
    )
    .unwrap();
    let mut jl = Vec::new();
    assert_eq!(log.export_jsonl(&Filter::default(), &mut jl).unwrap(), 3);
    let text = String::from_utf8(jl).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0].as_bytes(), &es[0].to_json_bytes().unwrap()[..]);
    let back: Entry = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(back, es[1]);

    let mut csv = Vec::new();
    assert_eq!(log.export_csv(&Filter::default(), &mut csv).unwrap(), 3);
    let csv = String::from_utf8(csv).unwrap();
    assert!(csv.starts_with("seq,ts,kind,actor,request_id,camera,detail,prev,hash\r\n"));
    assert!(csv.contains(&format!(
        "1,{T0},request_received,center,r0,porch,\"{{\"\"n\"\":0,\"\"reason\"\":\"\"test\"\"}}\",{ZERO_HASH},{}\r\n",
        es[0].hash
    )));
    assert!(csv.contains(",consent_rule_changed,resident,,porch,\"{\"\"note\"\":\"\"a, \\\"\"quoted\\\"\"\\nline\"\"}\","));
}

#[test]
fn kinds_serialise_snake_case() {
    for k in [
        AuditKind::LogStarted,
        AuditKind::RequestReceived,
        AuditKind::RequestRejected,
        AuditKind::Decision,
        AuditKind::GrantStart,
        AuditKind::GrantEnd,
        AuditKind::BytesSent,
        AuditKind::ClipExported,
        AuditKind::ClipSent,
        AuditKind::Revoke,
        AuditKind::Pause,
        AuditKind::Resume,
        AuditKind::ConsentRuleChanged,
        AuditKind::Pairing,
        AuditKind::CameraAdded,
        AuditKind::CameraRemoved,
    ] {
        assert_eq!(
            serde_json::to_string(&k).unwrap(),
            format!("\"{}\"", k.as_str())
        );
    }
}

#[test]
fn open_current_starts_a_chain_then_continues_it() {
    let db = temp_db();
    let log = AuditLog::open_current(&db, 1_000).unwrap();
    let first = log.list(&Filter::default()).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].kind, AuditKind::LogStarted);
    assert_eq!(first[0].detail["reason"], "new");
    fill(&log, 2);
    drop(log);
    let again = AuditLog::open_current(&db, 2_000).unwrap();
    assert_eq!(again.latest().seq, 3, "continued, no second log_started");
    again.verify().unwrap();
}

#[test]
fn open_current_keeps_an_unreadable_chain_aside_and_says_why() {
    let db = temp_db();
    let log = AuditLog::open_current(&db, 1_000).unwrap();
    fill(&log, 2);
    drop(log);
    // The newest entry cannot be decoded: the chain cannot be continued from it.
    let tree = db.open_tree(TREE).unwrap();
    let (k, _) = tree.last().unwrap().unwrap();
    tree.insert(k, &b"not an entry"[..]).unwrap();
    let log = AuditLog::open_current(&db, 5_000).unwrap();
    let entries = log.list(&Filter::default()).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].detail["reason"], "previous_chain_unreadable");
    assert_eq!(entries[0].detail["previous_tree"], TREE);
    // The old chain is untouched (three entries, the damaged one included) and no longer
    // current; a restart stays on the new chain.
    assert_eq!(db.open_tree(TREE).unwrap().len(), 3);
    drop(log);
    let again = AuditLog::open_current(&db, 6_000).unwrap();
    assert_eq!(again.latest().seq, 1);
}
