use super::*;

fn res(cpus: f64, mem: u64) -> Resources {
    Resources::new(cpus, mem, 0).unwrap()
}

fn cluster(agents: usize, cpus: f64, mem: u64) -> Allocator {
    let mut a = Allocator::default();
    for i in 0..agents {
        a.add_agent(AgentId::new(format!("a{i}")), res(cpus, mem), &[])
            .unwrap();
    }
    a
}

/// Frameworks that each take one `task` from every offer, decline the
/// rest without a filter, and repeat until nothing fits any more.
fn run_until_full(
    alloc: &mut Allocator,
    fws: &[FrameworkId],
    task: &Resources,
) -> HashMap<FrameworkId, u64> {
    let now = Instant::now();
    let mut launched: HashMap<FrameworkId, u64> = HashMap::new();
    for _ in 0..10_000 {
        let offers = alloc.allocate(now, None);
        if offers.is_empty() {
            break;
        }
        let mut progress = false;
        for o in offers {
            assert!(fws.contains(&o.framework));
            if o.resources.contains(task) {
                let rest = o.resources.checked_sub(task).unwrap();
                alloc.recover(&o.framework, &o.agent, &rest, None).unwrap();
                *launched.entry(o.framework.clone()).or_default() += 1;
                progress = true;
            } else {
                // Decline with a long filter: this agent is full for us.
                alloc
                    .recover(
                        &o.framework,
                        &o.agent,
                        &o.resources,
                        Some((now, Duration::from_secs(3600))),
                    )
                    .unwrap();
            }
        }
        alloc.check_invariants().unwrap();
        if !progress && alloc.allocate(now, None).is_empty() {
            break;
        }
    }
    launched
}

#[test]
fn equal_weights_converge_to_equal_dominant_shares() {
    let mut alloc = cluster(10, 8.0, 8192);
    // f1 is CPU-heavy, f2 memory-heavy: DRF equalises *dominant* shares.
    alloc.add_framework("f1".into(), "r1", true).unwrap();
    alloc.add_framework("f2".into(), "r2", true).unwrap();
    let fws: Vec<FrameworkId> = vec!["f1".into(), "f2".into()];
    let t1 = res(1.0, 256); // dominant: cpu 1/80
    let now = Instant::now();
    let mut offers_seen = 0;
    // Drive with per-framework task shapes.
    for _ in 0..5000 {
        let offers = alloc.allocate(now, None);
        if offers.is_empty() {
            break;
        }
        for o in offers {
            offers_seen += 1;
            let task = if o.framework.as_str() == "f1" {
                t1.clone()
            } else {
                res(0.25, 1024)
            };
            if o.resources.contains(&task) {
                let rest = o.resources.checked_sub(&task).unwrap();
                alloc.recover(&o.framework, &o.agent, &rest, None).unwrap();
            } else {
                alloc
                    .recover(
                        &o.framework,
                        &o.agent,
                        &o.resources,
                        Some((now, Duration::from_secs(3600))),
                    )
                    .unwrap();
            }
        }
    }
    assert!(offers_seen > 0);
    let s1 = alloc.framework_share(&fws[0]).unwrap();
    let s2 = alloc.framework_share(&fws[1]).unwrap();
    // One task's dominant share: f1 1/80 (cpu), f2 1024/81920 = 1/80 (mem).
    let one_task = 1.0 / 80.0;
    assert!(
        (s1 - s2).abs() <= one_task + 1e-9,
        "shares {s1} vs {s2} differ by more than one task ({one_task})"
    );
    assert!(s1 > 0.3, "cluster should be mostly used, got {s1}");
}

#[test]
fn weight_two_gets_twice_the_share() {
    let mut alloc = cluster(20, 4.0, 4096);
    alloc.add_framework("heavy".into(), "gold", true).unwrap();
    alloc.add_framework("light".into(), "bronze", true).unwrap();
    alloc.set_weight("gold", 2.0).unwrap();
    let fws: Vec<FrameworkId> = vec!["heavy".into(), "light".into()];
    // Stop when the cluster is 60% used so capacity doesn't cap anyone.
    let task = res(0.5, 512);
    let now = Instant::now();
    let mut used = 0u64;
    let capacity = 20 * 8;
    while used < capacity * 6 / 10 {
        let offers = alloc.allocate(now, None);
        assert!(!offers.is_empty());
        // Only the first offer is used per cycle: a strict DRF sequence.
        let mut iter = offers.into_iter();
        let o = iter.next().unwrap();
        let rest = o.resources.checked_sub(&task).unwrap();
        alloc.recover(&o.framework, &o.agent, &rest, None).unwrap();
        used += 1;
        for o in iter {
            alloc
                .recover(&o.framework, &o.agent, &o.resources, None)
                .unwrap();
        }
    }
    let h = alloc.framework_share(&fws[0]).unwrap();
    let l = alloc.framework_share(&fws[1]).unwrap();
    let ratio = h / l;
    assert!(
        (ratio - 2.0).abs() < 0.15,
        "share ratio {ratio} (heavy {h}, light {l})"
    );
}

#[test]
fn fills_cluster_and_respects_totals() {
    let mut alloc = cluster(5, 4.0, 4096);
    alloc.add_framework("a".into(), "*", true).unwrap();
    alloc.add_framework("b".into(), "*", true).unwrap();
    let launched = run_until_full(&mut alloc, &["a".into(), "b".into()], &res(1.0, 100));
    let total: u64 = launched.values().sum();
    assert_eq!(total, 20);
    assert_eq!(launched.get(&FrameworkId::from("a")), Some(&10));
}

#[test]
fn decline_filter_blocks_subset_until_expiry() {
    let mut alloc = cluster(1, 4.0, 4096);
    alloc.add_framework("f".into(), "*", true).unwrap();
    let t0 = Instant::now();
    let o = alloc.allocate(t0, None).pop().unwrap();
    alloc
        .recover(
            &o.framework,
            &o.agent,
            &o.resources,
            Some((t0, Duration::from_secs(5))),
        )
        .unwrap();
    assert!(alloc.allocate(t0 + Duration::from_secs(4), None).is_empty());
    assert_eq!(alloc.allocate(t0 + Duration::from_secs(5), None).len(), 1);
}

#[test]
fn filtered_framework_lets_the_next_one_have_the_agent() {
    let mut alloc = cluster(1, 4.0, 4096);
    alloc.add_framework("f".into(), "*", true).unwrap();
    alloc.add_framework("g".into(), "*", true).unwrap();
    let t0 = Instant::now();
    let o = alloc.allocate(t0, None).pop().unwrap();
    let first = o.framework.clone();
    alloc
        .recover(
            &o.framework,
            &o.agent,
            &o.resources,
            Some((t0, Duration::from_secs(5))),
        )
        .unwrap();
    let o2 = alloc.allocate(t0, None).pop().unwrap();
    assert_ne!(o2.framework, first);
}

#[test]
fn suppress_and_revive() {
    let mut alloc = cluster(2, 4.0, 4096);
    alloc.add_framework("f".into(), "*", true).unwrap();
    alloc.suppress(&"f".into()).unwrap();
    let now = Instant::now();
    assert!(alloc.allocate(now, None).is_empty());
    alloc.revive(&"f".into()).unwrap();
    assert_eq!(alloc.allocate(now, None).len(), 2);
}

#[test]
fn revive_clears_filters() {
    let mut alloc = cluster(1, 4.0, 4096);
    alloc.add_framework("f".into(), "*", true).unwrap();
    let t0 = Instant::now();
    let o = alloc.allocate(t0, None).pop().unwrap();
    alloc
        .recover(
            &o.framework,
            &o.agent,
            &o.resources,
            Some((t0, Duration::from_secs(500))),
        )
        .unwrap();
    assert!(alloc.allocate(t0, None).is_empty());
    alloc.revive(&"f".into()).unwrap();
    assert_eq!(alloc.allocate(t0, None).len(), 1);
}

#[test]
fn inactive_agents_and_frameworks_get_nothing() {
    let mut alloc = cluster(2, 4.0, 4096);
    alloc.add_framework("f".into(), "*", true).unwrap();
    alloc.set_agent_active(&"a0".into(), false).unwrap();
    let now = Instant::now();
    let offers = alloc.allocate(now, None);
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].agent.as_str(), "a1");
    alloc.set_framework_active(&"f".into(), false).unwrap();
    alloc
        .recover(&"f".into(), &"a1".into(), &offers[0].resources, None)
        .unwrap();
    assert!(alloc.allocate(now, None).is_empty());
}

#[test]
fn recover_more_than_held_is_refused() {
    let mut alloc = cluster(1, 4.0, 4096);
    alloc.add_framework("f".into(), "*", true).unwrap();
    let o = alloc.allocate(Instant::now(), None).pop().unwrap();
    let too_much = o.resources.add(&res(1.0, 0));
    assert!(matches!(
        alloc.recover(&o.framework, &o.agent, &too_much, None),
        Err(AllocatorError::OverRecover { .. })
    ));
    alloc.check_invariants().unwrap();
}

#[test]
fn remove_framework_frees_its_resources() {
    let mut alloc = cluster(3, 4.0, 4096);
    alloc.add_framework("f".into(), "*", true).unwrap();
    assert_eq!(alloc.allocate(Instant::now(), None).len(), 3);
    alloc.remove_framework(&"f".into()).unwrap();
    alloc.add_framework("g".into(), "*", true).unwrap();
    assert_eq!(alloc.allocate(Instant::now(), None).len(), 3);
    alloc.check_invariants().unwrap();
}

#[test]
fn used_resources_survive_add_agent() {
    let mut alloc = Allocator::default();
    alloc.add_framework("f".into(), "*", true).unwrap();
    alloc
        .add_agent("a".into(), res(4.0, 4096), &[("f".into(), res(3.0, 1000))])
        .unwrap();
    let o = alloc.allocate(Instant::now(), None).pop().unwrap();
    assert_eq!(o.resources, res(1.0, 3096));
}

/// Bug 13a. Mesos semantics: an ACCEPT that uses every offered resource
/// returns nothing and so filters nothing; the longer filter the framework
/// already had on the agent keeps refusing what it refused.
#[test]
fn accept_using_everything_keeps_the_longer_filter() {
    let mut alloc = cluster(1, 4.0, 4096);
    let (f, g, a0): (FrameworkId, FrameworkId, AgentId) = ("f".into(), "g".into(), "a0".into());
    alloc.add_framework(f.clone(), "*", true).unwrap();
    alloc.add_framework(g.clone(), "*", false).unwrap();
    let t0 = Instant::now();
    let hour = Duration::from_secs(3600);
    // g runs a task; f declines the rest for an hour.
    alloc.allocate_on(&g, &a0, &res(1.0, 1024)).unwrap();
    let o = alloc.allocate(t0, None).pop().unwrap();
    assert_eq!((&o.framework, &o.resources), (&f, &res(3.0, 3072)));
    alloc
        .recover(&f, &a0, &o.resources, Some((t0, hour)))
        .unwrap();
    // g's task ends: 4 cpus is more than f refused, so f is offered them...
    alloc.recover(&g, &a0, &res(1.0, 1024), None).unwrap();
    let t1 = t0 + Duration::from_secs(1);
    let o = alloc.allocate(t1, None).pop().unwrap();
    assert_eq!((&o.framework, &o.resources), (&f, &res(4.0, 4096)));
    // ...and launches two tasks using all of them: nothing comes back.
    alloc
        .recover(
            &f,
            &a0,
            &Resources::default(),
            Some((t1, Duration::from_secs(5))),
        )
        .unwrap();
    // The small task ends: 1 cpu free, a subset of what f refused for an hour.
    alloc.recover(&f, &a0, &res(1.0, 1024), None).unwrap();
    assert!(
        alloc
            .allocate(t0 + Duration::from_secs(60), None)
            .is_empty(),
        "the hour-long filter was replaced by the accept's empty one"
    );
    let o = alloc.allocate(t0 + hour, None).pop().unwrap();
    assert_eq!((&o.framework, &o.resources), (&f, &res(1.0, 1024)));
}

/// A later filter on other resources, shorter, is added to the earlier one:
/// it never shortens what the earlier one refuses.
#[test]
fn a_shorter_filter_does_not_shorten_a_longer_one() {
    let mut alloc = cluster(1, 4.0, 4096);
    let (f, g, a0): (FrameworkId, FrameworkId, AgentId) = ("f".into(), "g".into(), "a0".into());
    alloc.add_framework(f.clone(), "*", true).unwrap();
    alloc.add_framework(g.clone(), "*", false).unwrap();
    let t0 = Instant::now();
    let hour = Duration::from_secs(3600);
    alloc.allocate_on(&g, &a0, &res(1.0, 1024)).unwrap();
    let o = alloc.allocate(t0, None).pop().unwrap();
    alloc
        .recover(&f, &a0, &o.resources, Some((t0, hour)))
        .unwrap();
    alloc.recover(&g, &a0, &res(1.0, 1024), None).unwrap();
    let t1 = t0 + Duration::from_secs(1);
    let o = alloc.allocate(t1, None).pop().unwrap();
    assert_eq!(o.resources, res(4.0, 4096));
    // f launches 3 cpus and returns 1 with a 5 s filter.
    alloc
        .recover(&f, &a0, &res(1.0, 1024), Some((t1, Duration::from_secs(5))))
        .unwrap();
    // Its task shrinks to 1 cpu: 3 cpus free, refused by the hour-long filter.
    alloc.recover(&f, &a0, &res(2.0, 2048), None).unwrap();
    assert!(
        alloc
            .allocate(t0 + Duration::from_secs(60), None)
            .is_empty()
    );
    assert_eq!(alloc.allocate(t0 + hour, None).len(), 1);
}

/// Declines of the same resources keep the longest refusal, whatever the
/// order they come in.
#[test]
fn filters_on_the_same_resources_keep_the_longest() {
    let mut alloc = cluster(1, 4.0, 4096);
    let (f, a0): (FrameworkId, AgentId) = ("f".into(), "a0".into());
    alloc.add_framework(f.clone(), "*", true).unwrap();
    let t0 = Instant::now();
    let all = res(4.0, 4096);
    alloc.allocate_on(&f, &a0, &all).unwrap();
    alloc
        .recover(&f, &a0, &all, Some((t0, Duration::from_secs(100))))
        .unwrap();
    alloc.allocate_on(&f, &a0, &all).unwrap();
    alloc
        .recover(&f, &a0, &all, Some((t0, Duration::from_secs(10))))
        .unwrap();
    assert!(
        alloc
            .allocate(t0 + Duration::from_secs(50), None)
            .is_empty()
    );
    assert_eq!(alloc.allocate(t0 + Duration::from_secs(100), None).len(), 1);
}

/// A refusal longer than an `Instant` can hold is capped, not a panic.
#[test]
fn absurd_refusal_is_capped() {
    let mut alloc = cluster(1, 4.0, 4096);
    alloc.add_framework("f".into(), "*", true).unwrap();
    let t0 = Instant::now();
    let o = alloc.allocate(t0, None).pop().unwrap();
    alloc
        .recover(
            &o.framework,
            &o.agent,
            &o.resources,
            Some((t0, Duration::MAX)),
        )
        .unwrap();
    assert!(
        alloc
            .allocate(t0 + Duration::from_secs(86_400 * 365), None)
            .is_empty()
    );
}

/// With most frameworks filtered on an agent, the pick skips past them (the
/// scan budget is exceeded) and still takes the least-share unfiltered one.
#[test]
fn many_filtered_frameworks_are_skipped_in_drf_order() {
    let mut alloc = cluster(2, 4.0, 4096);
    let t0 = Instant::now();
    let n = 3 * SCAN_BUDGET;
    let fws: Vec<FrameworkId> = (0..n).map(|i| FrameworkId::new(format!("f{i}"))).collect();
    for (i, f) in fws.iter().enumerate() {
        alloc
            .add_framework(f.clone(), &format!("r{}", i % 5), true)
            .unwrap();
    }
    let a0: AgentId = "a0".into();
    // Every framework but the last two declines a0 for an hour.
    for f in &fws[..n - 2] {
        alloc.allocate_on(f, &a0, &res(4.0, 4096)).unwrap();
        alloc
            .recover(
                f,
                &a0,
                &res(4.0, 4096),
                Some((t0, Duration::from_secs(3600))),
            )
            .unwrap();
    }
    // Give the last one a share so the other unfiltered one comes first.
    alloc
        .allocate_on(&fws[n - 1], &"a1".into(), &res(1.0, 1))
        .unwrap();
    let offers = alloc.allocate(t0, Some(std::slice::from_ref(&a0)));
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].framework, fws[n - 2]);
    alloc.check_invariants().unwrap();
}

/// Roles are forgotten once their last framework goes (with the default
/// weight): 20,000 short-lived frameworks in distinct roles leave no trace,
/// and adding an agent stays cheap.
#[test]
fn roles_without_frameworks_are_forgotten() {
    let mut a = Allocator::default();
    for i in 0..20_000 {
        let id = FrameworkId::new(format!("f{i}"));
        a.add_framework(id.clone(), &format!("role-{i}"), true)
            .unwrap();
        a.remove_framework(&id).unwrap();
    }
    assert!(a.roles().is_empty(), "{} roles kept", a.roles().len());
    assert_eq!(a.roles.len(), 1, "role slots are reused");
    // A weighted role stays (its weight is configuration).
    a.set_weight("gold", 2.0).unwrap();
    let id = FrameworkId::new("g");
    a.add_framework(id.clone(), "gold", true).unwrap();
    a.remove_framework(&id).unwrap();
    assert_eq!(a.roles(), vec![("gold".to_string(), 2.0)]);
    a.check_invariants().unwrap();
}

/// Adding an agent whose tasks do not fit (or share a port) changes nothing.
#[test]
fn adding_an_agent_is_all_or_nothing() {
    let mut a = Allocator::default();
    let f = FrameworkId::new("f");
    a.add_framework(f.clone(), "*", true).unwrap();
    let total = Resources::parse("cpus:4;mem:1024;ports:[31000-31001]").unwrap();
    let t = Resources::parse("cpus:1;mem:10;ports:[31000-31000]").unwrap();
    let agent = AgentId::new("a");
    assert!(
        a.add_agent(
            agent.clone(),
            total.clone(),
            &[(f.clone(), t.clone()), (f.clone(), t.clone())]
        )
        .is_err()
    );
    assert!(
        a.agent_resources(&agent).is_none(),
        "a refused agent is not added"
    );
    a.check_invariants().unwrap();
    a.add_agent(agent.clone(), total, &[(f.clone(), t)])
        .unwrap();
    a.check_invariants().unwrap();
}

// ------------------------------------------------------------ reservations

/// Offers one cycle and returns (framework, agent) pairs, sorted.
fn offered(a: &mut Allocator, now: Instant) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = a
        .allocate(now, None)
        .into_iter()
        .map(|al| (al.framework.0, al.agent.0))
        .collect();
    v.sort();
    a.check_invariants().unwrap();
    v
}

fn pair(f: &str, a: &str) -> (String, String) {
    (f.to_string(), a.to_string())
}

/// An agent reserved for `public` is offered to frameworks of role
/// `public` only; a framework of that role also gets unreserved resources.
#[test]
fn reserved_resources_are_offered_only_to_their_role() {
    let mut a = Allocator::default();
    a.add_agent_reserved("pub".into(), Some("public"), res(4.0, 4096), &[])
        .unwrap();
    a.add_agent_reserved("priv".into(), Some("*"), res(4.0, 4096), &[])
        .unwrap();
    assert_eq!(a.agent_role(&"pub".into()), Some("public"));
    assert_eq!(a.agent_role(&"priv".into()), None, "`*` is unreserved");
    let now = Instant::now();
    // Only a framework of another role: the public agent is never offered.
    a.add_framework("web".into(), "*", true).unwrap();
    assert_eq!(offered(&mut a, now), vec![pair("web", "priv")]);
    a.recover(
        &"web".into(),
        &"priv".into(),
        &res(4.0, 4096),
        Some((now, Duration::from_secs(60))),
    )
    .unwrap();
    assert_eq!(
        offered(&mut a, now),
        vec![],
        "filtered on priv, and pub is not its role"
    );
    // A framework of role `public`: it gets the public agent, and the
    // unreserved one too (web declined it).
    a.add_framework("edge".into(), "public", true).unwrap();
    assert_eq!(
        offered(&mut a, now),
        vec![pair("edge", "priv"), pair("edge", "pub")]
    );
    // Returned without a filter, the unreserved agent goes by DRF: web holds
    // nothing (but filtered it), edge holds pub: once web's filter is gone
    // (REVIVE), web is the lower share and gets priv, never pub.
    a.recover(&"edge".into(), &"priv".into(), &res(4.0, 4096), None)
        .unwrap();
    a.revive(&"web".into()).unwrap();
    assert_eq!(offered(&mut a, now), vec![pair("web", "priv")]);
    a.recover(&"edge".into(), &"pub".into(), &res(4.0, 4096), None)
        .unwrap();
    assert_eq!(offered(&mut a, now), vec![pair("edge", "pub")]);
}

/// A reserved agent whose role has no framework (or only suppressed ones)
/// stays unoffered, and is offered as soon as one of its role can take it.
#[test]
fn reserved_agent_waits_for_a_framework_of_its_role() {
    let mut a = Allocator::default();
    a.add_agent_reserved("pub".into(), Some("public"), res(2.0, 1024), &[])
        .unwrap();
    let now = Instant::now();
    a.add_framework("f".into(), "other", true).unwrap();
    assert_eq!(offered(&mut a, now), vec![]);
    a.add_framework("p".into(), "public", true).unwrap();
    a.suppress(&"p".into()).unwrap();
    assert_eq!(
        offered(&mut a, now),
        vec![],
        "its only framework is suppressed"
    );
    a.revive(&"p".into()).unwrap();
    assert_eq!(offered(&mut a, now), vec![pair("p", "pub")]);
    // Declined with a filter by every framework of the role: nobody.
    a.recover(
        &"p".into(),
        &"pub".into(),
        &res(2.0, 1024),
        Some((now, Duration::from_secs(5))),
    )
    .unwrap();
    assert_eq!(offered(&mut a, now), vec![]);
    assert_eq!(
        offered(&mut a, now + Duration::from_secs(6)),
        vec![pair("p", "pub")],
        "after the filter expires"
    );
}

/// Unreserved resources stay shared by DRF between roles when reserved
/// agents are in the cluster (and count in the share denominator).
#[test]
fn unreserved_resources_stay_shared_by_drf_next_to_reserved_ones() {
    let mut a = cluster(6, 4.0, 4096);
    for i in 0..3 {
        a.add_agent_reserved(
            AgentId::new(format!("pub{i}")),
            Some("public"),
            res(4.0, 4096),
            &[],
        )
        .unwrap();
    }
    a.add_framework("f1".into(), "r1", true).unwrap();
    a.add_framework("f2".into(), "r2", true).unwrap();
    let fws: Vec<FrameworkId> = vec!["f1".into(), "f2".into()];
    let launched = run_until_full(&mut a, &fws, &res(1.0, 512));
    // 6 unreserved agents × 4 tasks each, none on the public agents.
    assert_eq!(launched.values().sum::<u64>(), 24, "{launched:?}");
    assert_eq!(launched[&"f1".into()], 12, "{launched:?}");
    assert_eq!(launched[&"f2".into()], 12, "{launched:?}");
    for i in 0..3 {
        let id = AgentId::new(format!("pub{i}"));
        assert!(a.held(&"f1".into(), &id).is_empty());
        assert!(a.held(&"f2".into(), &id).is_empty());
    }
}
