//! Table tests of every rule combination, named cases, and a model check of the engine.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const H: i64 = 3_600_000;
/// 2023-11-14T00:00:00Z, a midnight (UTC).
const MIDNIGHT: i64 = 1_699_920_000_000;
const NOON: i64 = MIDNIGHT + 12 * H;

fn live(id: &str, camera: &str, duration_s: u64, emergency: bool) -> Request {
    Request {
        id: id.to_owned(),
        camera: camera.to_owned(),
        scope: RequestScope::Live { duration_s },
        emergency,
        reason: "burglary reported".to_owned(),
        case: Some("C-1".to_owned()),
        requester: "officer 7".to_owned(),
    }
}

fn clip(id: &str, camera: &str, from_ms: i64, to_ms: i64, emergency: bool) -> Request {
    Request {
        scope: RequestScope::Clip { from_ms, to_ms },
        ..live(id, camera, 1, emergency)
    }
}

fn rules(live: Mode, clips: Mode) -> CameraRules {
    CameraRules {
        live,
        clips,
        ..CameraRules::default()
    }
}

fn engine_with(camera: &str, r: CameraRules) -> Engine {
    let mut e = Engine::new(EngineOptions::default());
    e.set_rules(camera, r).unwrap();
    e
}

fn granted(d: &Decision) -> &Grant {
    match &d.verdict {
        Verdict::Granted(g) => g,
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HoursCase {
    None,
    Inside,
    Outside,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Granted,
    Pending,
    Denied(DenyReason),
}

/// The consent model of docs/design.md, written out independently of the engine.
fn expected(
    mode: Mode,
    emergency_mode: Mode,
    emergency: bool,
    paused: bool,
    hours: HoursCase,
) -> Expect {
    if paused {
        return Expect::Denied(DenyReason::Paused);
    }
    let m = if emergency { emergency_mode } else { mode };
    match m {
        Mode::Never => Expect::Denied(DenyReason::NotAllowed),
        _ if hours == HoursCase::Outside && !emergency => Expect::Denied(DenyReason::OutsideHours),
        Mode::Ask => Expect::Pending,
        Mode::Always => Expect::Granted,
    }
}

#[test]
fn decide_table_every_mode_kind_emergency_paused_hours() {
    const MODES: [Mode; 3] = [Mode::Never, Mode::Ask, Mode::Always];
    let mut rows = 0;
    for mode in MODES {
        for emergency_mode in MODES {
            for kind in [Kind::Live, Kind::Clip] {
                for emergency in [false, true] {
                    for paused in [false, true] {
                        for hours in [HoursCase::None, HoursCase::Inside, HoursCase::Outside] {
                            rows += 1;
                            let name = format!(
                                "{kind:?} mode={mode:?} emergency_mode={emergency_mode:?} \
                                 emergency={emergency} paused={paused} hours={hours:?}"
                            );
                            let mut r = CameraRules {
                                emergency: EmergencyRules {
                                    live: emergency_mode,
                                    clips: emergency_mode,
                                },
                                ..CameraRules::default()
                            };
                            match kind {
                                Kind::Live => r.live = mode,
                                Kind::Clip => r.clips = mode,
                            }
                            // Hours 08..20 UTC; noon is inside, 22:00 outside.
                            let now_ms = match hours {
                                HoursCase::Outside => MIDNIGHT + 22 * H,
                                _ => NOON,
                            };
                            if hours != HoursCase::None {
                                r.hours = Some(Hours {
                                    start_hour: 8,
                                    end_hour: 20,
                                });
                            }
                            let mut e = engine_with("cam", r);
                            if paused {
                                e.pause();
                            }
                            let req = match kind {
                                Kind::Live => live("r1", "cam", 60, emergency),
                                Kind::Clip => {
                                    clip("r1", "cam", now_ms - 600_000, now_ms, emergency)
                                }
                            };
                            let d = e.decide(&req, Now::utc(now_ms)).unwrap();
                            let got = match &d.verdict {
                                Verdict::Granted(_) => Expect::Granted,
                                Verdict::Pending { .. } => Expect::Pending,
                                Verdict::Denied { reason } => Expect::Denied(*reason),
                            };
                            let want = expected(mode, emergency_mode, emergency, paused, hours);
                            assert_eq!(got, want, "{name}");
                            assert_eq!(
                                d.notify_resident,
                                emergency || want == Expect::Pending,
                                "{name}: notify_resident"
                            );
                            // The other kind's mode never leaks into this one.
                            let other_allowed = e.grants().count() + e.pending().count();
                            assert_eq!(
                                other_allowed,
                                usize::from(matches!(want, Expect::Granted | Expect::Pending)),
                                "{name}: state"
                            );
                            // A grant is usable right away, and only for its own kind.
                            if want == Expect::Granted {
                                assert!(e.may_send("r1", "cam", kind, None, now_ms).is_ok());
                                let other = match kind {
                                    Kind::Live => Kind::Clip,
                                    Kind::Clip => Kind::Live,
                                };
                                assert_eq!(
                                    e.may_send("r1", "cam", other, None, now_ms).unwrap_err(),
                                    Refusal::WrongKind
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(rows, 216);
}

#[test]
fn default_rules_deny_everything() {
    let mut e = Engine::new(EngineOptions::default());
    for (i, req) in [
        live("a", "cam", 10, false),
        live("b", "cam", 10, true),
        clip("c", "cam", NOON - 1000, NOON, false),
        clip("d", "cam", NOON - 1000, NOON, true),
    ]
    .iter()
    .enumerate()
    {
        let d = e.decide(req, Now::utc(NOON)).unwrap();
        assert_eq!(
            d.verdict,
            Verdict::Denied {
                reason: DenyReason::NotAllowed
            },
            "case {i}"
        );
    }
    assert_eq!(e.grants().count(), 0);
}

#[test]
fn live_always_clamps_to_max_live() {
    let mut e = engine_with(
        "cam",
        CameraRules {
            max_live_s: 900,
            ..rules(Mode::Always, Mode::Never)
        },
    );
    let d = e
        .decide(&live("r", "cam", 7200, false), Now::utc(NOON))
        .unwrap();
    let g = granted(&d);
    assert_eq!(g.start_ms, NOON);
    assert_eq!(g.until_ms, NOON + 900_000);
    assert_eq!(g.granted_by, GrantedBy::Rule);
}

#[test]
fn live_always_short_ask_is_not_extended() {
    let mut e = engine_with("cam", rules(Mode::Always, Mode::Never));
    let d = e
        .decide(&live("r", "cam", 30, false), Now::utc(NOON))
        .unwrap();
    assert_eq!(granted(&d).until_ms, NOON + 30_000);
}

#[test]
fn live_always_inside_hours_ends_when_hours_end() {
    let mut e = engine_with(
        "cam",
        CameraRules {
            hours: Some(Hours {
                start_hour: 8,
                end_hour: 20,
            }),
            max_live_s: 3600,
            ..rules(Mode::Always, Mode::Never)
        },
    );
    let now = MIDNIGHT + 19 * H + 50 * 60_000; // 19:50
    let d = e
        .decide(&live("r", "cam", 3600, false), Now::utc(now))
        .unwrap();
    assert_eq!(granted(&d).until_ms, MIDNIGHT + 20 * H);
}

#[test]
fn emergency_ignores_hours_and_always_notifies() {
    let mut r = rules(Mode::Always, Mode::Always);
    r.emergency = EmergencyRules {
        live: Mode::Always,
        clips: Mode::Never,
    };
    r.hours = Some(Hours {
        start_hour: 8,
        end_hour: 20,
    });
    let mut e = engine_with("cam", r);
    let night = MIDNIGHT + 23 * H;
    let d = e
        .decide(&live("e1", "cam", 60, true), Now::utc(night))
        .unwrap();
    assert_eq!(granted(&d).until_ms, night + 60_000);
    assert!(d.notify_resident);
    // The emergency clip rule is `never`, although normal clips are `always`.
    let d = e
        .decide(
            &clip("e2", "cam", night - 1000, night, true),
            Now::utc(night),
        )
        .unwrap();
    assert_eq!(
        d.verdict,
        Verdict::Denied {
            reason: DenyReason::NotAllowed
        }
    );
    assert!(d.notify_resident);
}

#[test]
fn clip_window_over_limit_is_denied_not_clamped() {
    let mut e = engine_with(
        "cam",
        CameraRules {
            max_clip_window_s: 3600,
            ..rules(Mode::Never, Mode::Always)
        },
    );
    let d = e
        .decide(&clip("r", "cam", NOON - H - 1, NOON, false), Now::utc(NOON))
        .unwrap();
    assert_eq!(
        d.verdict,
        Verdict::Denied {
            reason: DenyReason::WindowTooLong
        }
    );
    let d = e
        .decide(&clip("r2", "cam", NOON - H, NOON, false), Now::utc(NOON))
        .unwrap();
    let g = granted(&d);
    assert_eq!(
        g.scope,
        Scope::Clip {
            from_ms: NOON - H,
            to_ms: NOON
        }
    );
    assert_eq!(g.until_ms, NOON + 86_400_000, "clip grant ttl");
}

#[test]
fn clip_window_straddling_end_of_hours_is_denied() {
    let mut e = engine_with(
        "cam",
        CameraRules {
            hours: Some(Hours {
                start_hour: 8,
                end_hour: 20,
            }),
            ..rules(Mode::Never, Mode::Always)
        },
    );
    let at = MIDNIGHT + 23 * H;
    let cases = [
        ("inside", MIDNIGHT + 19 * H, MIDNIGHT + 20 * H, true),
        (
            "straddles end",
            MIDNIGHT + 19 * H,
            MIDNIGHT + 20 * H + 1,
            false,
        ),
        (
            "straddles start",
            MIDNIGHT + 8 * H - 1,
            MIDNIGHT + 9 * H,
            false,
        ),
        ("before", MIDNIGHT + 7 * H, MIDNIGHT + 8 * H, false),
        ("at start", MIDNIGHT + 8 * H, MIDNIGHT + 8 * H + 1, true),
    ];
    for (i, (name, from, to, ok)) in cases.into_iter().enumerate() {
        let d = e
            .decide(
                &clip(&format!("r{i}"), "cam", from, to, false),
                Now::utc(at),
            )
            .unwrap();
        assert_eq!(matches!(d.verdict, Verdict::Granted(_)), ok, "{name}");
    }
}

#[test]
fn hours_wrap_midnight() {
    let h = Hours {
        start_hour: 22,
        end_hour: 6,
    };
    let cases = [
        ("21:59", MIDNIGHT + 22 * H - 1, None),
        ("22:00", MIDNIGHT + 22 * H, Some(MIDNIGHT + 30 * H)),
        ("23:30", MIDNIGHT + 23 * H + H / 2, Some(MIDNIGHT + 30 * H)),
        ("00:00", MIDNIGHT, Some(MIDNIGHT + 6 * H)),
        ("05:59", MIDNIGHT + 6 * H - 1, Some(MIDNIGHT + 6 * H)),
        ("06:00", MIDNIGHT + 6 * H, None),
        ("12:00", NOON, None),
    ];
    for (name, at, end) in cases {
        assert_eq!(h.span_end(at, 0), end, "{name}");
    }
    // A clip from 23:00 to 05:00 is inside; 23:00 to 07:00 is not.
    assert!(h.covers(MIDNIGHT + 23 * H, MIDNIGHT + 29 * H, 0));
    assert!(!h.covers(MIDNIGHT + 23 * H, MIDNIGHT + 31 * H, 0));
}

#[test]
fn hours_use_the_utc_offset() {
    let h = Hours {
        start_hour: 8,
        end_hour: 20,
    };
    // 14:00 UTC is 09:00 at UTC-5 (inside) and 23:00 at UTC+9 (outside).
    let at = MIDNIGHT + 14 * H;
    assert_eq!(h.span_end(at, -5 * 3600), Some(MIDNIGHT + 25 * H));
    assert_eq!(h.span_end(at, 9 * 3600), None);
    let mut e = engine_with(
        "cam",
        CameraRules {
            hours: Some(h),
            ..rules(Mode::Always, Mode::Never)
        },
    );
    let d = e
        .decide(
            &live("r", "cam", 60, false),
            Now {
                utc_ms: at,
                utc_offset_s: 9 * 3600,
            },
        )
        .unwrap();
    assert_eq!(
        d.verdict,
        Verdict::Denied {
            reason: DenyReason::OutsideHours
        }
    );
}

#[test]
fn hours_all_day_has_no_end() {
    let h = Hours {
        start_hour: 0,
        end_hour: 24,
    };
    assert_eq!(h.span_end(NOON, 0), Some(i64::MAX));
    assert!(h.covers(NOON - 10 * H, NOON + 30 * H, 0));
}

#[test]
fn rules_validate_reports_every_problem() {
    let bad = CameraRules {
        max_live_s: 0,
        max_clip_window_s: 8 * 86_400,
        hours: Some(Hours {
            start_hour: 24,
            end_hour: 24,
        }),
        ..CameraRules::default()
    };
    match bad.validate() {
        Err(ConsentError::InvalidRules(p)) => assert_eq!(p.len(), 4, "{p:?}"),
        other => panic!("{other:?}"),
    }
    let mut e = Engine::new(EngineOptions::default());
    assert!(e.set_rules("cam", bad).is_err());
    assert_eq!(
        e.rules("cam"),
        CameraRules::default(),
        "invalid rules not stored"
    );
    assert!(CameraRules::default().validate().is_ok());
}

#[test]
fn rules_serde_defaults_and_unknown_fields() {
    let r: CameraRules = serde_json::from_str("{}").unwrap();
    assert_eq!(r, CameraRules::default());
    let r: CameraRules = serde_json::from_str(
        r#"{"live":"ask","clips":"always","emergency":{"live":"always"},"max_live_s":60,
            "hours":{"start_hour":22,"end_hour":6}}"#,
    )
    .unwrap();
    assert_eq!(r.live, Mode::Ask);
    assert_eq!(r.emergency.live, Mode::Always);
    assert_eq!(r.emergency.clips, Mode::Never);
    assert_eq!(r.max_clip_window_s, 3600);
    assert!(serde_json::from_str::<CameraRules>(r#"{"live":"sometimes"}"#).is_err());
    assert!(serde_json::from_str::<CameraRules>(r#"{"center_may_widen":true}"#).is_err());
    let back: CameraRules = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
    assert_eq!("ask".parse::<Mode>().unwrap(), Mode::Ask);
    assert!("Ask".parse::<Mode>().is_err());
}

#[test]
fn ask_is_pending_and_expires_after_ten_minutes() {
    let mut e = engine_with("cam", rules(Mode::Ask, Mode::Ask));
    let d = e
        .decide(&live("r", "cam", 60, false), Now::utc(NOON))
        .unwrap();
    assert_eq!(
        d.verdict,
        Verdict::Pending {
            expires_at_ms: NOON + 600_000
        }
    );
    assert!(d.notify_resident);
    assert_eq!(
        e.may_send("r", "cam", Kind::Live, None, NOON).unwrap_err(),
        Refusal::NoGrant
    );
    assert!(e.expire(NOON + 599_999).is_empty());
    let ev = e.expire(NOON + 600_000);
    assert_eq!(ev.len(), 1);
    assert!(matches!(
        &ev[0],
        Event::PendingEnded {
            reason: EndReason::Expired,
            ..
        }
    ));
    assert_eq!(e.pending().count(), 0);
}

#[test]
fn ask_timeout_is_configurable() {
    let mut e = Engine::new(EngineOptions {
        ask_timeout: std::time::Duration::from_secs(30),
        ..EngineOptions::default()
    });
    e.set_rules("cam", rules(Mode::Ask, Mode::Never)).unwrap();
    let d = e
        .decide(&live("r", "cam", 60, false), Now::utc(NOON))
        .unwrap();
    assert_eq!(
        d.verdict,
        Verdict::Pending {
            expires_at_ms: NOON + 30_000
        }
    );
}

#[test]
fn approve_starts_grant_at_approval_within_current_limits() {
    let mut e = engine_with("cam", rules(Mode::Ask, Mode::Ask));
    e.decide(&live("r", "cam", 3600, false), Now::utc(NOON))
        .unwrap();
    let g = e.approve("r", NOON + 5000).unwrap();
    assert_eq!(g.start_ms, NOON + 5000);
    assert_eq!(g.until_ms, NOON + 5000 + 900_000);
    assert_eq!(g.granted_by, GrantedBy::Resident);
    assert!(e
        .may_send("r", "cam", Kind::Live, None, NOON + 5000)
        .is_ok());
    assert!(matches!(
        e.approve("r", NOON + 6000),
        Err(ConsentError::NotFound { .. })
    ));
}

#[test]
fn approve_clamps_clip_window_to_a_lowered_limit() {
    let mut e = engine_with("cam", rules(Mode::Never, Mode::Ask));
    e.decide(&clip("r", "cam", NOON - H, NOON, false), Now::utc(NOON))
        .unwrap();
    e.set_rules(
        "cam",
        CameraRules {
            max_clip_window_s: 60,
            ..rules(Mode::Never, Mode::Ask)
        },
    )
    .unwrap();
    let g = e.approve("r", NOON).unwrap();
    assert_eq!(
        g.scope,
        Scope::Clip {
            from_ms: NOON - H,
            to_ms: NOON - H + 60_000
        }
    );
}

#[test]
fn approve_after_expiry_fails_and_expire_reports_it() {
    let mut e = engine_with("cam", rules(Mode::Ask, Mode::Never));
    e.decide(&live("r", "cam", 60, false), Now::utc(NOON))
        .unwrap();
    assert_eq!(
        e.approve("r", NOON + 600_000),
        Err(ConsentError::Expired { id: "r".into() })
    );
    assert_eq!(e.expire(NOON + 600_000).len(), 1);
}

#[test]
fn approve_while_paused_fails() {
    let mut e = engine_with("cam", rules(Mode::Ask, Mode::Never));
    e.decide(&live("r", "cam", 60, false), Now::utc(NOON))
        .unwrap();
    e.pause();
    assert!(e.approve("r", NOON).is_err());
}

#[test]
fn deny_removes_pending() {
    let mut e = engine_with("cam", rules(Mode::Ask, Mode::Never));
    e.decide(&live("r", "cam", 60, false), Now::utc(NOON))
        .unwrap();
    assert_eq!(e.deny("r").unwrap().request.id, "r");
    assert!(e.approve("r", NOON).is_err());
    assert!(e.deny("r").is_err());
}

#[test]
fn revoke_stops_may_send_immediately() {
    let mut e = engine_with("cam", rules(Mode::Always, Mode::Always));
    e.decide(&live("r", "cam", 60, false), Now::utc(NOON))
        .unwrap();
    assert!(e
        .may_send("r", "cam", Kind::Live, Some(NOON..NOON + 40), NOON)
        .is_ok());
    assert_eq!(e.revoke("r").unwrap().id, "r");
    assert_eq!(
        e.may_send("r", "cam", Kind::Live, Some(NOON..NOON + 40), NOON)
            .unwrap_err(),
        Refusal::NoGrant
    );
    assert!(e.revoke("r").is_err());
}

#[test]
fn pause_ends_all_grants_and_pending_and_denies_new() {
    let mut e = engine_with("cam", rules(Mode::Always, Mode::Ask));
    e.decide(&live("g", "cam", 60, false), Now::utc(NOON))
        .unwrap();
    e.decide(&clip("p", "cam", NOON - 1000, NOON, false), Now::utc(NOON))
        .unwrap();
    let ev = e.pause();
    assert_eq!(ev.len(), 2);
    assert!(ev.iter().all(|x| x.reason() == EndReason::Paused));
    assert_eq!(
        e.may_send("g", "cam", Kind::Live, None, NOON).unwrap_err(),
        Refusal::Paused
    );
    let d = e
        .decide(&live("n", "cam", 60, true), Now::utc(NOON))
        .unwrap();
    assert_eq!(
        d.verdict,
        Verdict::Denied {
            reason: DenyReason::Paused
        }
    );
    assert!(d.notify_resident, "emergency shown even when paused");
}

#[test]
fn resume_does_not_restore_grants() {
    let mut e = engine_with("cam", rules(Mode::Always, Mode::Never));
    e.decide(&live("g", "cam", 60, false), Now::utc(NOON))
        .unwrap();
    e.pause();
    e.resume();
    assert!(!e.is_paused());
    assert_eq!(
        e.may_send("g", "cam", Kind::Live, None, NOON).unwrap_err(),
        Refusal::NoGrant
    );
    let d = e
        .decide(&live("g2", "cam", 60, false), Now::utc(NOON))
        .unwrap();
    granted(&d);
}

#[test]
fn cancel_ends_own_grant_or_pending_and_checks_camera() {
    let mut e = engine_with("cam", rules(Mode::Always, Mode::Ask));
    e.decide(&live("g", "cam", 60, false), Now::utc(NOON))
        .unwrap();
    e.decide(&clip("p", "cam", NOON - 1000, NOON, false), Now::utc(NOON))
        .unwrap();
    assert!(matches!(
        e.cancel("g", "other"),
        Err(ConsentError::WrongCamera { .. })
    ));
    assert!(matches!(e.cancel("g", "cam"), Ok(Cancelled::Grant(_))));
    assert!(matches!(e.cancel("p", "cam"), Ok(Cancelled::Pending(_))));
    assert!(matches!(
        e.cancel("g", "cam"),
        Err(ConsentError::NotFound { .. })
    ));
}

#[test]
fn expire_ends_grant_at_until_and_may_send_refuses_before_expire_runs() {
    let mut e = engine_with("cam", rules(Mode::Always, Mode::Never));
    e.decide(&live("g", "cam", 10, false), Now::utc(NOON))
        .unwrap();
    assert!(e
        .may_send("g", "cam", Kind::Live, None, NOON + 9_999)
        .is_ok());
    assert_eq!(
        e.may_send("g", "cam", Kind::Live, None, NOON + 10_000)
            .unwrap_err(),
        Refusal::GrantExpired
    );
    assert!(e.expire(NOON + 9_999).is_empty());
    let ev = e.expire(NOON + 10_000);
    assert!(matches!(
        &ev[..],
        [Event::GrantEnded {
            reason: EndReason::Expired,
            ..
        }]
    ));
}

/// (name, request id, camera, kind, media, now, expected).
type SendCase = (
    &'static str,
    &'static str,
    &'static str,
    Kind,
    Option<std::ops::Range<i64>>,
    i64,
    Result<(), Refusal>,
);

#[test]
fn may_send_checks_camera_kind_time_and_window() {
    let mut e = engine_with("cam", rules(Mode::Always, Mode::Always));
    e.set_rules("cam2", rules(Mode::Always, Mode::Always))
        .unwrap();
    e.decide(
        &clip("c", "cam", NOON - 60_000, NOON, false),
        Now::utc(NOON),
    )
    .unwrap();
    let t = NOON + 1000;
    let cases: [SendCase; 9] = [
        (
            "inside",
            "c",
            "cam",
            Kind::Clip,
            Some(NOON - 30_000..NOON - 28_000),
            t,
            Ok(()),
        ),
        (
            "overlaps start",
            "c",
            "cam",
            Kind::Clip,
            Some(NOON - 62_000..NOON - 59_000),
            t,
            Ok(()),
        ),
        (
            "before",
            "c",
            "cam",
            Kind::Clip,
            Some(NOON - 62_000..NOON - 60_000),
            t,
            Err(Refusal::OutsideGrant),
        ),
        (
            "after",
            "c",
            "cam",
            Kind::Clip,
            Some(NOON..NOON + 2000),
            t,
            Err(Refusal::OutsideGrant),
        ),
        ("init", "c", "cam", Kind::Clip, None, t, Ok(())),
        (
            "other camera",
            "c",
            "cam2",
            Kind::Clip,
            None,
            t,
            Err(Refusal::WrongCamera),
        ),
        (
            "other kind",
            "c",
            "cam",
            Kind::Live,
            None,
            t,
            Err(Refusal::WrongKind),
        ),
        (
            "unknown id",
            "x",
            "cam",
            Kind::Clip,
            None,
            t,
            Err(Refusal::NoGrant),
        ),
        (
            "after ttl",
            "c",
            "cam",
            Kind::Clip,
            None,
            NOON + 86_400_000,
            Err(Refusal::GrantExpired),
        ),
    ];
    for (name, id, cam, kind, media, now, want) in cases {
        assert_eq!(
            e.may_send(id, cam, kind, media, now).map(|_| ()),
            want,
            "{name}"
        );
    }
}

#[test]
fn may_send_live_allows_preroll_only() {
    let mut e = engine_with("cam", rules(Mode::Always, Mode::Never));
    e.decide(&live("g", "cam", 60, false), Now::utc(NOON))
        .unwrap();
    let ok = |m: i64| {
        e.may_send("g", "cam", Kind::Live, Some(m..m + 33), NOON + 100)
            .is_ok()
    };
    assert!(ok(NOON - 10_000), "pre-roll keyframe");
    assert!(!ok(NOON - 10_001), "older than the pre-roll");
    assert!(ok(NOON + 59_999));
    assert!(!ok(NOON + 60_000), "video after until");
    assert!(
        e.may_send("g", "cam", Kind::Live, None, NOON - 1).is_err(),
        "before the grant began"
    );
}

#[test]
fn set_rules_to_never_ends_grants_and_pending_of_that_kind() {
    let mut e = engine_with("cam", rules(Mode::Always, Mode::Ask));
    e.decide(&live("g", "cam", 60, false), Now::utc(NOON))
        .unwrap();
    e.decide(&clip("p", "cam", NOON - 1000, NOON, false), Now::utc(NOON))
        .unwrap();
    let ev = e.set_rules("cam", rules(Mode::Never, Mode::Ask)).unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].id(), "g");
    assert_eq!(ev[0].reason(), EndReason::RuleChanged);
    assert_eq!(e.pending().count(), 1);
    let ev = e.set_rules("cam", rules(Mode::Never, Mode::Never)).unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].id(), "p");
}

#[test]
fn set_rules_shortens_live_grants() {
    let mut e = engine_with("cam", rules(Mode::Always, Mode::Never));
    e.decide(&live("g", "cam", 900, false), Now::utc(NOON))
        .unwrap();
    e.set_rules(
        "cam",
        CameraRules {
            max_live_s: 60,
            ..rules(Mode::Always, Mode::Never)
        },
    )
    .unwrap();
    assert_eq!(e.grant("g").unwrap().until_ms, NOON + 60_000);
}

#[test]
fn remove_camera_ends_its_grants() {
    let mut e = engine_with("cam", rules(Mode::Always, Mode::Never));
    e.set_rules("cam2", rules(Mode::Always, Mode::Never))
        .unwrap();
    e.decide(&live("a", "cam", 60, false), Now::utc(NOON))
        .unwrap();
    e.decide(&live("b", "cam2", 60, false), Now::utc(NOON))
        .unwrap();
    let ev = e.remove_camera("cam");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].reason(), EndReason::CameraRemoved);
    assert_eq!(e.rules("cam"), CameraRules::default());
    assert!(e.grant("b").is_some());
}

#[test]
fn duplicate_id_is_an_error() {
    let mut e = engine_with("cam", rules(Mode::Always, Mode::Never));
    e.decide(&live("g", "cam", 60, false), Now::utc(NOON))
        .unwrap();
    assert!(matches!(
        e.decide(&live("g", "cam", 60, false), Now::utc(NOON)),
        Err(ConsentError::DuplicateId { .. })
    ));
}

#[test]
fn state_roundtrips_through_serde() {
    let mut e = engine_with("cam", rules(Mode::Always, Mode::Ask));
    e.decide(&live("g", "cam", 60, false), Now::utc(NOON))
        .unwrap();
    e.decide(&clip("p", "cam", NOON - 1000, NOON, true), Now::utc(NOON))
        .unwrap();
    let json = serde_json::to_string(e.state()).unwrap();
    let back: EngineState = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, e.state());
    let e2 = Engine::restore(EngineOptions::default(), back);
    assert!(e2.may_send("g", "cam", Kind::Live, None, NOON).is_ok());
}

#[test]
fn reason_strings_are_short_snake_case() {
    assert_eq!(DenyReason::WindowTooLong.as_str(), "window_too_long");
    assert_eq!(
        serde_json::to_string(&DenyReason::OutsideHours).unwrap(),
        "\"outside_hours\""
    );
    assert_eq!(EndReason::RuleChanged.as_str(), "rule_changed");
    assert_eq!(
        serde_json::to_string(&EndReason::Revoked).unwrap(),
        "\"revoked\""
    );
    assert_eq!(Refusal::GrantExpired.to_string(), "grant_expired");
}

// ---------------------------------------------------------------------------------------------
// Model check: random sequences of requests, approvals, revokes, pauses, rule changes and time
// steps, against a model that says what must and must not be sendable.

const CAMS: [&str; 3] = ["a", "b", "c"];
const START: i64 = MIDNIGHT + 6 * H;

#[derive(Clone, Debug)]
enum Op {
    Request {
        cam: usize,
        clip: bool,
        emergency: bool,
        duration_s: u64,
        back_ms: i64,
        len_ms: i64,
    },
    Approve(usize),
    Deny(usize),
    Revoke(usize),
    Cancel(usize, usize),
    Pause,
    Resume,
    SetRules {
        cam: usize,
        modes: [u8; 4],
        max_live_s: u64,
        max_clip_window_s: u64,
        hours: Option<(u8, u8)>,
    },
    Advance(i64),
    Expire,
    /// Checks may_send at the edges of a grant the model knows (times and media bounds).
    Probe(usize),
    MaySend {
        id: usize,
        cam: usize,
        clip: bool,
        media_back_ms: Option<i64>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, any::<bool>(), any::<bool>(), 1..3000u64, 0..7_200_000i64, 1..7_200_000i64)
            .prop_map(|(cam, clip, emergency, duration_s, back_ms, len_ms)| Op::Request {
                cam, clip, emergency, duration_s, back_ms, len_ms
            }),
        2 => any::<usize>().prop_map(Op::Approve),
        1 => any::<usize>().prop_map(Op::Deny),
        1 => any::<usize>().prop_map(Op::Revoke),
        1 => (any::<usize>(), 0..3usize).prop_map(|(i, c)| Op::Cancel(i, c)),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
        2 => (0..3usize, any::<[u8; 4]>(), 1..2000u64, 1..7200u64,
              proptest::option::of((0..24u8, 0..25u8)))
            .prop_map(|(cam, modes, max_live_s, max_clip_window_s, hours)| Op::SetRules {
                cam, modes, max_live_s, max_clip_window_s,
                hours: hours.filter(|(s, e)| s != e),
            }),
        3 => (0..1_200_000i64).prop_map(Op::Advance),
        1 => Just(Op::Expire),
        2 => any::<usize>().prop_map(Op::Probe),
        8 => (any::<usize>(), 0..3usize, any::<bool>(), proptest::option::of(-20_000..7_200_000i64))
            .prop_map(|(id, cam, clip, media_back_ms)| Op::MaySend { id, cam, clip, media_back_ms }),
    ]
}

fn mode_of(b: u8) -> Mode {
    match b % 3 {
        0 => Mode::Never,
        1 => Mode::Ask,
        _ => Mode::Always,
    }
}

#[derive(Clone, Debug)]
struct Auth {
    camera: String,
    kind: Kind,
    emergency: bool,
    start: i64,
    until: i64,
    window: Option<(i64, i64)>,
}

#[derive(Default)]
struct Model {
    rules: BTreeMap<String, CameraRules>,
    paused: bool,
    pending: BTreeMap<String, (Request, i64)>,
    auth: BTreeMap<String, Auth>,
}

/// Whether local hour `h` is allowed by `hours` (brute force, independent of the engine).
fn hour_ok(hours: &Hours, h: i64) -> bool {
    let (s, e) = (i64::from(hours.start_hour), i64::from(hours.end_hour));
    if s < e {
        s <= h && h < e
    } else {
        h >= s || h < e
    }
}

fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(H).rem_euclid(24)
}

impl Model {
    fn rules(&self, cam: &str) -> CameraRules {
        self.rules.get(cam).copied().unwrap_or_default()
    }

    /// `(verdict class, exact live until)`.
    fn expect(&self, req: &Request, now: i64) -> (Expect, Option<i64>) {
        let r = self.rules(&req.camera);
        if self.paused {
            return (Expect::Denied(DenyReason::Paused), None);
        }
        let kind = req.scope.kind();
        let m = r.mode(kind, req.emergency);
        if m == Mode::Never {
            return (Expect::Denied(DenyReason::NotAllowed), None);
        }
        let mut live_until = None;
        match req.scope {
            RequestScope::Clip { from_ms, to_ms } => {
                if to_ms - from_ms > r.max_clip_window_s as i64 * 1000 {
                    return (Expect::Denied(DenyReason::WindowTooLong), None);
                }
                if let (Some(h), false) = (r.hours, req.emergency) {
                    let first = from_ms.div_euclid(H);
                    let last = (to_ms - 1).div_euclid(H);
                    if !(first..=last).all(|i| hour_ok(&h, hour_of(i * H))) {
                        return (Expect::Denied(DenyReason::OutsideHours), None);
                    }
                }
            }
            RequestScope::Live { duration_s } => {
                let mut until = now + duration_s.min(r.max_live_s) as i64 * 1000;
                if let (Some(h), false) = (r.hours, req.emergency) {
                    if !hour_ok(&h, hour_of(now)) {
                        return (Expect::Denied(DenyReason::OutsideHours), None);
                    }
                    // Walk forward to the first hour that is not allowed.
                    let mut t = now.div_euclid(H) * H + H;
                    for _ in 0..48 {
                        if !hour_ok(&h, hour_of(t)) {
                            until = until.min(t);
                            break;
                        }
                        t += H;
                    }
                }
                live_until = Some(until);
            }
        }
        match m {
            Mode::Ask => (Expect::Pending, None),
            _ => (Expect::Granted, live_until),
        }
    }

    fn may_send(
        &self,
        id: &str,
        cam: &str,
        kind: Kind,
        media: Option<(i64, i64)>,
        now: i64,
    ) -> bool {
        let Some(a) = self.auth.get(id) else {
            return false;
        };
        if self.paused || a.camera != cam || a.kind != kind || now < a.start || now >= a.until {
            return false;
        }
        match (media, a.window) {
            (None, _) => true,
            (Some((s, _)), None) => s >= a.start - 10_000 && s < a.until,
            (Some((s, e)), Some((from, to))) => s < to && e.max(s + 1) > from,
        }
    }
}

fn check_invariants(e: &Engine, m: &Model) -> Result<(), TestCaseError> {
    for g in e.grants() {
        let r = m.rules(&g.camera);
        match g.scope {
            Scope::Live => prop_assert!(
                g.until_ms - g.start_ms <= r.max_live_s as i64 * 1000,
                "live grant {} outlives its limit",
                g.id
            ),
            Scope::Clip { from_ms, to_ms } => {
                prop_assert!(from_ms < to_ms);
                prop_assert!(g.until_ms - g.start_ms <= 86_400_000);
            }
        }
        prop_assert!(!e.is_paused(), "a grant survived a pause");
        prop_assert!(
            r.mode(g.kind(), g.emergency) != Mode::Never,
            "grant under a never rule"
        );
    }
    prop_assert_eq!(e.grants().count(), m.auth.len());
    prop_assert_eq!(e.pending().count(), m.pending.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// No fragment is ever allowed without a grant that covers that camera, kind and time; and
    /// everything a grant covers is allowed. Grants never outlive their limit; revoke and pause
    /// take effect at once.
    #[test]
    fn model_no_fragment_without_covering_grant(ops in proptest::collection::vec(op(), 1..80)) {
        let mut e = Engine::new(EngineOptions::default());
        let mut m = Model::default();
        let mut now = START;
        let mut ids: Vec<String> = Vec::new();
        let pick = |ids: &Vec<String>, i: usize| ids.get(i % ids.len().max(1)).cloned();
        for op in ops {
            match op {
                Op::Request { cam, clip: is_clip, emergency, duration_s, back_ms, len_ms } => {
                    let id = format!("r{}", ids.len());
                    ids.push(id.clone());
                    let req = if is_clip {
                        clip(&id, CAMS[cam], now - back_ms, now - back_ms + len_ms, emergency)
                    } else {
                        live(&id, CAMS[cam], duration_s, emergency)
                    };
                    let (want, live_until) = m.expect(&req, now);
                    let d = e.decide(&req, Now::utc(now)).unwrap();
                    prop_assert_eq!(d.notify_resident, emergency || want == Expect::Pending);
                    match (&d.verdict, want) {
                        (Verdict::Granted(g), Expect::Granted) => {
                            prop_assert_eq!(g.start_ms, now);
                            match req.scope {
                                RequestScope::Live { .. } => {
                                    prop_assert_eq!(Some(g.until_ms), live_until);
                                }
                                RequestScope::Clip { from_ms, to_ms } => {
                                    prop_assert_eq!(g.scope, Scope::Clip { from_ms, to_ms });
                                    prop_assert_eq!(g.until_ms, now + 86_400_000);
                                }
                            }
                            m.auth.insert(id, Auth {
                                camera: req.camera.clone(),
                                kind: req.scope.kind(),
                                emergency,
                                start: now,
                                until: g.until_ms,
                                window: match req.scope {
                                    RequestScope::Clip { from_ms, to_ms } => Some((from_ms, to_ms)),
                                    _ => None,
                                },
                            });
                        }
                        (Verdict::Pending { expires_at_ms }, Expect::Pending) => {
                            prop_assert_eq!(*expires_at_ms, now + 600_000);
                            m.pending.insert(id, (req, *expires_at_ms));
                        }
                        (Verdict::Denied { reason }, Expect::Denied(w)) => prop_assert_eq!(*reason, w),
                        (got, want) => prop_assert!(false, "got {:?}, want {:?}", got, want),
                    }
                }
                Op::Approve(i) => {
                    let Some(id) = pick(&ids, i) else { continue };
                    let res = e.approve(&id, now);
                    let ok = !m.paused && m.pending.get(&id).is_some_and(|(_, exp)| now < *exp);
                    prop_assert_eq!(res.is_ok(), ok, "approve {}", id);
                    if let Ok(g) = res {
                        let (req, _) = m.pending.remove(&id).unwrap();
                        let r = m.rules(&req.camera);
                        let (until, window) = match req.scope {
                            RequestScope::Live { duration_s } => {
                                (now + duration_s.min(r.max_live_s) as i64 * 1000, None)
                            }
                            RequestScope::Clip { from_ms, to_ms } => (
                                now + 86_400_000,
                                Some((from_ms, to_ms.min(from_ms + r.max_clip_window_s as i64 * 1000))),
                            ),
                        };
                        prop_assert_eq!(g.until_ms, until);
                        m.auth.insert(id, Auth {
                            camera: req.camera.clone(),
                            kind: req.scope.kind(),
                            emergency: req.emergency,
                            start: now,
                            until,
                            window,
                        });
                    }
                }
                Op::Deny(i) => {
                    let Some(id) = pick(&ids, i) else { continue };
                    prop_assert_eq!(e.deny(&id).is_ok(), m.pending.remove(&id).is_some());
                }
                Op::Revoke(i) => {
                    let Some(id) = pick(&ids, i) else { continue };
                    prop_assert_eq!(e.revoke(&id).is_ok(), m.auth.remove(&id).is_some());
                    // Effective at once, for any media and time.
                    for kind in [Kind::Live, Kind::Clip] {
                        for cam in CAMS {
                            prop_assert!(e.may_send(&id, cam, kind, None, now).is_err());
                        }
                    }
                }
                Op::Cancel(i, cam) => {
                    let Some(id) = pick(&ids, i) else { continue };
                    let owner = m.auth.get(&id).map(|a| a.camera.clone())
                        .or_else(|| m.pending.get(&id).map(|(r, _)| r.camera.clone()));
                    let res = e.cancel(&id, CAMS[cam]);
                    prop_assert_eq!(res.is_ok(), owner.as_deref() == Some(CAMS[cam]));
                    if res.is_ok() {
                        m.auth.remove(&id);
                        m.pending.remove(&id);
                    }
                }
                Op::Pause => {
                    let n = m.auth.len() + m.pending.len();
                    prop_assert_eq!(e.pause().len(), n);
                    m.paused = true;
                    m.auth.clear();
                    m.pending.clear();
                    for id in &ids {
                        prop_assert!(e.may_send(id, "a", Kind::Live, None, now).is_err());
                    }
                }
                Op::Resume => {
                    e.resume();
                    m.paused = false;
                }
                Op::SetRules { cam, modes, max_live_s, max_clip_window_s, hours } => {
                    let r = CameraRules {
                        live: mode_of(modes[0]),
                        clips: mode_of(modes[1]),
                        emergency: EmergencyRules { live: mode_of(modes[2]), clips: mode_of(modes[3]) },
                        max_live_s,
                        max_clip_window_s,
                        hours: hours.map(|(start_hour, end_hour)| Hours { start_hour, end_hour }),
                    };
                    let camera = CAMS[cam];
                    let ev = e.set_rules(camera, r).unwrap();
                    m.rules.insert(camera.to_owned(), r);
                    let before = m.auth.len() + m.pending.len();
                    m.auth.retain(|_, a| a.camera != camera || r.mode(a.kind, a.emergency) != Mode::Never);
                    m.pending.retain(|_, (q, _)| q.camera != camera || r.mode(q.scope.kind(), q.emergency) != Mode::Never);
                    prop_assert_eq!(ev.len(), before - m.auth.len() - m.pending.len());
                    for a in m.auth.values_mut() {
                        if a.camera == camera && a.kind == Kind::Live {
                            a.until = a.until.min(a.start + max_live_s as i64 * 1000);
                        }
                    }
                }
                Op::Advance(dt) => now += dt,
                Op::Expire => {
                    let ev = e.expire(now);
                    let before = m.auth.len() + m.pending.len();
                    m.auth.retain(|_, a| now < a.until);
                    m.pending.retain(|_, (_, exp)| now < *exp);
                    prop_assert_eq!(ev.len(), before - m.auth.len() - m.pending.len());
                    prop_assert!(ev.iter().all(|x| x.reason() == EndReason::Expired));
                }
                Op::Probe(i) => {
                    let Some(id) = pick(&ids, i) else { continue };
                    let Some(a) = m.auth.get(&id).cloned() else { continue };
                    let mut medias = vec![None];
                    let edges = match a.window {
                        None => [a.start - 10_001, a.start - 10_000, a.until - 1, a.until],
                        Some((from, to)) => [from - 2000, from - 1999, to - 1, to],
                    };
                    medias.extend(edges.iter().map(|&s| Some((s, s + 2000))));
                    for t in [a.start - 1, a.start, now, a.until - 1, a.until] {
                        for media in &medias {
                            let got = e
                                .may_send(&id, &a.camera, a.kind, media.map(|(s, e)| s..e), t)
                                .is_ok();
                            let want = m.may_send(&id, &a.camera, a.kind, *media, t);
                            prop_assert_eq!(got, want, "probe {} {:?} at {}", id, media, t);
                        }
                    }
                }
                Op::MaySend { id, cam, clip: is_clip, media_back_ms } => {
                    let id = pick(&ids, id).unwrap_or_else(|| "none".to_owned());
                    let kind = if is_clip { Kind::Clip } else { Kind::Live };
                    let media = media_back_ms.map(|b| (now - b, now - b + 2000));
                    let got = e.may_send(&id, CAMS[cam], kind, media.map(|(s, e)| s..e), now).is_ok();
                    let want = m.may_send(&id, CAMS[cam], kind, media, now);
                    prop_assert_eq!(got, want, "may_send {} {} {:?} {:?} at {}", id, CAMS[cam], kind, media, now);
                }
            }
            check_invariants(&e, &m)?;
        }
    }
}
