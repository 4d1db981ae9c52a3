use tern_wire::{Availability, Basic, Delegate, InboxRule, Tuple};

use super::*;

/// Monday 2026-11-23 08:59 UTC, and the instants after it the tests need.
const MON_0859: Millis = 1_795_424_340_000;
const MON_0900: Millis = 1_795_424_400_000;
const MON_1700: Millis = 1_795_453_200_000;
const SAT_1000: Millis = 1_795_860_000_000;
const MON_2330: Millis = 1_795_476_600_000;
const TUE_0559: Millis = 1_795_499_940_000;
const TUE_0600: Millis = 1_795_500_000_000;

fn rule(who: Who, decision: Decision) -> PresenceRule {
    PresenceRule {
        who,
        decision,
        view: None,
        when: None,
    }
}

fn office() -> When {
    When {
        days: 0x1f,
        from: 9 * 60,
        to: 17 * 60,
        offset: 0,
    }
}

#[test]
fn the_most_specific_kind_decides_whatever_the_order() {
    let rules = Rules {
        presence: vec![
            rule(Who::Anyone, Decision::Deny),
            rule(Who::Domain("work.test".into()), Decision::Polite),
            rule(Who::User("boss@work.test".into()), Decision::Allow),
            rule(Who::Anonymous, Decision::Ask),
        ],
        ..Rules::default()
    };
    let decide = |peer| grant(&rules, &Index::new(&rules), "me@home.test", peer, 0).decision;
    assert_eq!(decide("boss@work.test"), Decision::Allow);
    assert_eq!(decide("intern@work.test"), Decision::Polite);
    assert_eq!(decide("x@elsewhere.test"), Decision::Deny);
    assert_eq!(decide("anonymous+7@home.test"), Decision::Ask);
    // The principal itself is never subject to its rules.
    assert_eq!(decide("me@home.test"), Decision::Allow);
}

#[test]
fn without_rules_principals_are_allowed_and_anonymous_peers_denied() {
    let rules = Rules::default();
    assert_eq!(
        grant(&rules, &Index::new(&rules), "me@d", "you@d", 0).decision,
        Decision::Allow
    );
    assert_eq!(
        grant(&rules, &Index::new(&rules), "me@d", "anonymous+1@d", 0).decision,
        Decision::Deny
    );
    // `Anyone` never matches an anonymous peer.
    let open = Rules {
        presence: vec![rule(Who::Anyone, Decision::Allow)],
        ..Rules::default()
    };
    assert_eq!(
        grant(&open, &Index::new(&open), "me@d", "anonymous+1@d", 0).decision,
        Decision::Deny
    );
}

#[test]
fn the_first_rule_of_a_kind_wins_and_a_rule_out_of_its_time_is_skipped() {
    let mut working = rule(Who::Domain("work.test".into()), Decision::Allow);
    working.when = Some(office());
    let rules = Rules {
        presence: vec![
            working,
            rule(Who::Domain("work.test".into()), Decision::Polite),
            rule(Who::Domain("work.test".into()), Decision::Deny),
        ],
        ..Rules::default()
    };
    let at = |now| {
        grant(
            &rules,
            &Index::new(&rules),
            "me@home.test",
            "c@work.test",
            now,
        )
    };
    assert_eq!(at(MON_0859).decision, Decision::Polite);
    assert_eq!(at(MON_0859).rule, Some(1));
    assert_eq!(at(MON_0900).decision, Decision::Allow);
    assert_eq!(at(MON_1700).decision, Decision::Polite);
    assert_eq!(at(SAT_1000).decision, Decision::Polite);
}

#[test]
fn windows_cross_midnight_and_belong_to_the_day_they_start() {
    let night = When {
        days: 1, // Monday night only
        from: 22 * 60,
        to: 6 * 60,
        offset: 0,
    };
    assert!(applies(&night, MON_2330));
    assert!(applies(&night, TUE_0559));
    assert!(!applies(&night, TUE_0600));
    assert!(!applies(&night, MON_0900));
    // The same wall-clock window one hour east of UTC starts an hour earlier in UTC.
    let east = When {
        offset: 60,
        ..office()
    };
    assert!(applies(&east, MON_0900 - 3_600_000)); // 08:00 UTC = 09:00 local
    assert!(!applies(&east, MON_0859 - 3_600_000)); // 07:59 UTC = 08:59 local
    assert!(!applies(&east, MON_1700 - 60_000)); // 16:59 UTC = 17:59 local
}

#[test]
fn the_next_boundary_is_the_next_start_or_end_of_any_window() {
    let mut working = rule(Who::Anyone, Decision::Allow);
    working.when = Some(office());
    let rules = Rules {
        presence: vec![working],
        ..Rules::default()
    };
    assert_eq!(next_boundary(&rules, MON_0859), Some(MON_0900));
    assert_eq!(next_boundary(&rules, MON_0900), Some(MON_1700));
    assert_eq!(next_boundary(&Rules::default(), MON_0900), None);
    assert_eq!(timed_state(&rules, MON_0859), 0);
    assert_eq!(timed_state(&rules, MON_0900), 1);
}

#[test]
fn a_view_shows_chosen_tuples_hides_fields_and_replaces_availability() {
    let tuple = |id: &str, basic| Tuple {
        id: id.into(),
        basic,
        availability: Some(Availability::AVAILABLE),
        contact: Some("im:me@home.test".into()),
        note: Some("at the beach".into()),
        at: Some(5),
        ext: vec![tern_wire::Ext::wake(9)],
    };
    let doc = Presence {
        tuples: vec![tuple("phone", Basic::Open), tuple("desk", Basic::Closed)],
        card: vec![tern_wire::CardField {
            kind: tern_wire::CardKind::NAME,
            value: "Me".into(),
        }],
    };
    let colleagues = View {
        tuples: vec![],
        hide: View::NOTE | View::CONTACT | View::CARD | View::EXT | View::TIME,
        status: Some(Availability::BUSY),
    };
    let seen = apply_view(&colleagues, &doc);
    assert_eq!(seen.tuples.len(), 2);
    assert!(seen.card.is_empty());
    assert_eq!(seen.tuples[0].availability, Some(Availability::BUSY));
    assert_eq!(seen.tuples[0].basic, Basic::Open);
    // A CLOSED tuple keeps its own availability: the view never opens anything.
    assert_eq!(seen.tuples[1].availability, Some(Availability::AVAILABLE));
    assert!(
        seen.tuples
            .iter()
            .all(|t| t.note.is_none() && t.contact.is_none())
    );
    assert!(
        seen.tuples
            .iter()
            .all(|t| t.at.is_none() && t.ext.is_empty())
    );
    let phone_only = View {
        tuples: vec!["phone".into()],
        ..View::default()
    };
    let seen = apply_view(&phone_only, &doc);
    assert_eq!(seen.tuples, vec![doc.tuples[0].clone()]);
    assert_eq!(seen.card, doc.card);
}

#[test]
fn inbox_rules_and_delegates() {
    let rules = Rules {
        inbox: vec![
            InboxRule {
                who: Who::Domain("spam.test".into()),
                delivery: Delivery::Discard,
            },
            InboxRule {
                who: Who::User("friend@spam.test".into()),
                delivery: Delivery::Accept,
            },
        ],
        delegates: vec![Delegate {
            who: "assistant@d".into(),
            rights: Delegate::READ,
        }],
        ..Rules::default()
    };
    assert_eq!(delivery(&rules, "friend@spam.test"), Delivery::Accept);
    assert_eq!(delivery(&rules, "bot@spam.test"), Delivery::Discard);
    assert_eq!(delivery(&rules, "x@d"), Delivery::Accept);
    assert_eq!(delivery(&rules, "anonymous+3@d"), Delivery::Refuse);
    assert!(delegated(&rules, "assistant@d", Delegate::READ));
    assert!(!delegated(&rules, "assistant@d", Delegate::PUBLISH));
    assert!(!delegated(&rules, "x@d", Delegate::READ));
}

#[test]
fn rules_are_checked_and_normalised() {
    let rules = Rules {
        presence: vec![rule(Who::User("Bob@Example.TEST".into()), Decision::Deny)],
        ..Rules::default()
    };
    let rules = normalise(rules).unwrap();
    assert_eq!(rules.presence[0].who, Who::User("bob@example.test".into()));
    let bad_time = |when| Rules {
        presence: vec![PresenceRule {
            when: Some(when),
            ..rule(Who::Anyone, Decision::Allow)
        }],
        ..Rules::default()
    };
    assert!(
        normalise(bad_time(When {
            days: 0,
            ..office()
        }))
        .is_err()
    );
    assert!(
        normalise(bad_time(When {
            from: 1440,
            ..office()
        }))
        .is_err()
    );
    assert!(
        normalise(bad_time(When {
            to: 540,
            ..office()
        }))
        .is_err()
    );
    assert!(
        normalise(bad_time(When {
            offset: 900,
            ..office()
        }))
        .is_err()
    );
    let too_many = Rules {
        presence: vec![rule(Who::Anyone, Decision::Allow); 65],
        ..Rules::default()
    };
    assert!(normalise(too_many).is_err());
    let bad_name = Rules {
        presence: vec![rule(Who::User("not an address".into()), Decision::Allow)],
        ..Rules::default()
    };
    assert!(normalise(bad_name).is_err());
}

#[test]
fn anonymous_peers_are_shown_by_domain_only() {
    assert!(is_anonymous("anonymous+12@d.test"));
    assert!(is_anonymous("anonymous@d.test"));
    assert!(!is_anonymous("anonymously@d.test"));
    assert_eq!(public_name("anonymous+12@d.test"), "anonymous@d.test");
    assert_eq!(public_name("bob@d.test"), "bob@d.test");
}
