use super::*;

fn link(params: LinkParams, seed: u64) -> Link {
    Link::new(params, Rng::new(seed)).expect("valid params")
}

fn arrival(fate: Fate) -> Option<Instant> {
    match fate {
        Fate::Delivered { at, .. } => Some(at),
        Fate::Dropped(_) => None,
    }
}

/// Sends `count` packets of `len` bytes every `gap`; the send times and fates.
fn send_train(
    link: &mut Link,
    base: Instant,
    count: u32,
    gap: Duration,
    len: usize,
) -> Vec<(Instant, Fate)> {
    (0..count)
        .map(|i| {
            let now = base + gap * i;
            (now, link.transmit(now, len))
        })
        .collect()
}

fn loss_pattern(loss: Loss, count: usize, seed: u64) -> Vec<bool> {
    let mut l = link(
        LinkParams {
            loss,
            ..LinkParams::ideal()
        },
        seed,
    );
    let now = Instant::now();
    (0..count)
        .map(|_| l.transmit(now, 100) == Fate::Dropped(DropReason::Loss))
        .collect()
}

/// Mean length of runs of consecutive losses.
fn mean_burst(pattern: &[bool]) -> f64 {
    let losses = pattern.iter().filter(|&&lost| lost).count();
    let bursts = pattern
        .iter()
        .enumerate()
        .filter(|&(i, &lost)| lost && (i == 0 || !pattern[i - 1]))
        .count();
    losses as f64 / bursts as f64
}

#[test]
fn saturated_10_mbit_link_delivers_10_mbit_within_2_percent() {
    let rate = 10_000_000;
    let mut l = link(
        LinkParams {
            rate_bps: Some(rate),
            queue_bytes: 64 * 1024,
            delay: Duration::from_millis(5),
            ..LinkParams::ideal()
        },
        1,
    );
    let base = Instant::now();
    // 1200-byte packets every 640 us offer 15 Mbit/s for 10 s.
    let duration = Duration::from_secs(10);
    let fates = send_train(&mut l, base, 15_625, Duration::from_micros(640), 1200);
    let start = base + Duration::from_millis(5);
    let bytes: usize = fates
        .iter()
        .filter_map(|&(_, fate)| arrival(fate))
        .filter(|&at| at >= start && at <= start + duration)
        .map(|_| 1200)
        .sum();
    let goodput = bytes as f64 * 8.0 / duration.as_secs_f64();
    assert!(
        (goodput / rate as f64 - 1.0).abs() < 0.02,
        "goodput {goodput} bit/s on a {rate} bit/s link"
    );
    assert!(l.stats().dropped_queue > 4_000, "{:?}", l.stats());
}

#[test]
fn independent_5_percent_loss_within_half_a_point_over_100k() {
    let pattern = loss_pattern(Loss::Independent(0.05), 100_000, 2);
    let rate = pattern.iter().filter(|&&lost| lost).count() as f64 / 1e5;
    assert!((rate - 0.05).abs() < 0.005, "loss rate {rate}");
}

#[test]
fn gilbert_elliott_long_run_loss_matches_stationary_mix_within_10_percent() {
    let loss = Loss::GilbertElliott {
        p_good_to_bad: 0.02,
        p_bad_to_good: 0.2,
        loss_good: 0.01,
        loss_bad: 0.6,
    };
    // pi_bad = 0.02 / 0.22; expected = pi_bad * 0.6 + pi_good * 0.01.
    let expected = 0.02 / 0.22 * 0.6 + 0.2 / 0.22 * 0.01;
    assert!((loss.mean() - expected).abs() < 1e-12);
    let pattern = loss_pattern(loss, 200_000, 3);
    let rate = pattern.iter().filter(|&&lost| lost).count() as f64 / 2e5;
    assert!(
        (rate / expected - 1.0).abs() < 0.1,
        "loss rate {rate}, expected {expected}"
    );
}

#[test]
fn gilbert_elliott_bursts_average_1_over_p_bad_to_good_within_10_percent() {
    let loss = Loss::GilbertElliott {
        p_good_to_bad: 0.01,
        p_bad_to_good: 0.25,
        loss_good: 0.0,
        loss_bad: 1.0,
    };
    let pattern = loss_pattern(loss, 200_000, 4);
    let rate = pattern.iter().filter(|&&lost| lost).count() as f64 / 2e5;
    assert!((rate / loss.mean() - 1.0).abs() < 0.15, "loss rate {rate}");
    let burst = mean_burst(&pattern);
    assert!((burst - 4.0).abs() < 0.4, "mean burst {burst}, expected 4");

    // The same mean loss, independent: bursts barely longer than one packet.
    let independent = loss_pattern(Loss::Independent(loss.mean()), 200_000, 4);
    let short = mean_burst(&independent);
    assert!(short < 1.1, "independent mean burst {short}");
}

#[test]
fn without_jitter_every_arrival_is_exactly_send_plus_serialization_plus_delay() {
    let delay = Duration::from_millis(30);
    let rate = 1_000_000;
    let mut l = link(
        LinkParams {
            delay,
            rate_bps: Some(rate),
            ..LinkParams::ideal()
        },
        5,
    );
    let base = Instant::now();
    // 1000 bytes take 8 ms at 1 Mbit/s; every 10 ms never queues.
    for (now, fate) in send_train(&mut l, base, 1000, Duration::from_millis(10), 1000) {
        assert_eq!(arrival(fate), Some(now + Duration::from_millis(8) + delay));
    }
    let mut unlimited = link(
        LinkParams {
            delay,
            ..LinkParams::ideal()
        },
        5,
    );
    for (now, fate) in send_train(&mut unlimited, base, 1000, Duration::from_micros(1), 1000) {
        assert_eq!(arrival(fate), Some(now + delay));
    }
}

#[test]
fn jitter_spreads_uniformly_over_delay_to_delay_plus_jitter() {
    let delay = Duration::from_millis(20);
    let jitter = Duration::from_millis(10);
    let mut l = link(
        LinkParams {
            delay,
            jitter,
            ..LinkParams::ideal()
        },
        6,
    );
    let base = Instant::now();
    // Spaced wider than the jitter, so the FIFO floor never moves an arrival.
    let fates = send_train(&mut l, base, 10_000, Duration::from_millis(20), 500);
    let mut buckets = [0u32; 10];
    let mut total = Duration::ZERO;
    for &(now, fate) in &fates {
        let extra = arrival(fate).unwrap() - now;
        assert!(extra >= delay && extra <= delay + jitter, "{extra:?}");
        total += extra - delay;
        let bucket = ((extra - delay).as_secs_f64() / jitter.as_secs_f64() * 10.0) as usize;
        buckets[bucket.min(9)] += 1;
    }
    // Mean within 0.2 ms of jitter / 2 (about 7 standard errors).
    let mean = total / 10_000;
    assert!(
        mean.abs_diff(jitter / 2) < Duration::from_micros(200),
        "mean jitter {mean:?}"
    );
    // Each tenth of the range holds 1000 +- 150 (about 5 standard errors).
    for count in buckets {
        assert!((850..1150).contains(&count), "uneven {buckets:?}");
    }
}

#[test]
fn jitter_alone_never_reorders_and_stays_in_range() {
    let delay = Duration::from_millis(20);
    let jitter = Duration::from_millis(10);
    let mut l = link(
        LinkParams {
            delay,
            jitter,
            ..LinkParams::ideal()
        },
        7,
    );
    // Packets 100 us apart with 10 ms jitter would reorder without the floor.
    let fates = send_train(
        &mut l,
        Instant::now(),
        10_000,
        Duration::from_micros(100),
        500,
    );
    let mut last = None;
    for &(now, fate) in &fates {
        let at = arrival(fate).unwrap();
        assert!(at - now >= delay && at - now <= delay + jitter);
        assert!(last <= Some(at), "reordered by jitter alone");
        last = Some(at);
    }
}

#[test]
fn reorder_probability_5_percent_within_half_a_point() {
    let p = 0.05;
    let mut l = link(
        LinkParams {
            delay: Duration::from_millis(10),
            reorder: p,
            // Ten and a half packet gaps: a late packet is overtaken unless
            // the next ten are all late too (probability p^10).
            reorder_delay: Duration::from_micros(10_500),
            ..LinkParams::ideal()
        },
        8,
    );
    let n = 100_000;
    let fates = send_train(&mut l, Instant::now(), n, Duration::from_millis(1), 200);
    let arrivals: Vec<Instant> = fates.iter().map(|&(_, f)| arrival(f).unwrap()).collect();
    // Late (RFC 4737 "reordered"): arrives after some later-sent packet.
    let mut late = 0;
    let mut earliest_after: Option<Instant> = None;
    for &at in arrivals.iter().rev() {
        if earliest_after.is_some_and(|e| e < at) {
            late += 1;
        }
        earliest_after = Some(earliest_after.map_or(at, |e| e.min(at)));
    }
    let late = f64::from(late) / f64::from(n);
    assert!((late - p).abs() < 0.005, "late fraction {late}");
    // Overtaking: arrives before an earlier-sent one, i.e. an on-time packet
    // with a late one among the ten before it: (1 - p)(1 - (1 - p)^10).
    let mut overtaking = 0;
    let mut latest_before: Option<Instant> = None;
    for &at in &arrivals {
        if latest_before.is_some_and(|l| l > at) {
            overtaking += 1;
        }
        latest_before = Some(latest_before.map_or(at, |l| l.max(at)));
    }
    let overtaking = f64::from(overtaking) / f64::from(n);
    let expected = (1.0 - p) * (1.0 - (1.0 - p).powi(10));
    assert!(
        (overtaking - expected).abs() < 0.01,
        "overtaking fraction {overtaking}, expected {expected}"
    );
}

#[test]
fn duplication_10_percent_within_half_a_point_and_same_instant() {
    let mut l = link(
        LinkParams {
            duplicate: 0.1,
            delay: Duration::from_millis(3),
            ..LinkParams::ideal()
        },
        9,
    );
    let fates = send_train(
        &mut l,
        Instant::now(),
        100_000,
        Duration::from_micros(10),
        300,
    );
    let mut dups = 0;
    for (_, fate) in fates {
        if let Fate::Delivered {
            at,
            duplicate_at: Some(dup),
        } = fate
        {
            assert_eq!(dup, at);
            dups += 1;
        }
    }
    let rate = f64::from(dups) / 1e5;
    assert!((rate - 0.1).abs() < 0.005, "duplicate rate {rate}");
    assert_eq!(l.stats().duplicated, dups as u64);
    assert_eq!(l.stats().delivered, 100_000);
}

#[test]
fn mtu_sized_packet_passes_one_byte_more_is_dropped() {
    let mut l = link(
        LinkParams {
            mtu: 1280,
            ..LinkParams::ideal()
        },
        10,
    );
    let now = Instant::now();
    assert!(arrival(l.transmit(now, 1280)).is_some());
    assert_eq!(l.transmit(now, 1281), Fate::Dropped(DropReason::Mtu));
    assert_eq!(l.stats().dropped_mtu, 1);
    assert_eq!(l.stats().delivered, 1);
}

#[test]
fn down_drops_and_bumps_generation_up_passes_again() {
    let mut l = link(LinkParams::ideal(), 11);
    let now = Instant::now();
    assert_eq!(l.generation(), 0);
    assert!(arrival(l.transmit(now, 100)).is_some());
    l.set_up(false);
    assert!(!l.is_up());
    assert_eq!(l.generation(), 1);
    assert_eq!(l.transmit(now, 100), Fate::Dropped(DropReason::Down));
    // Staying down is not a second outage.
    l.set_up(false);
    assert_eq!(l.generation(), 1);
    l.set_up(true);
    assert!(l.is_up());
    assert_eq!(l.generation(), 1);
    assert!(arrival(l.transmit(now, 100)).is_some());
    assert_eq!(l.stats().dropped_down, 1);
}

#[test]
fn going_down_empties_the_queue() {
    let mut l = link(
        LinkParams {
            rate_bps: Some(1_000_000),
            queue_bytes: 10_000,
            mtu: 1500,
            ..LinkParams::ideal()
        },
        12,
    );
    let now = Instant::now();
    for _ in 0..10 {
        assert!(arrival(l.transmit(now, 1000)).is_some());
    }
    assert_eq!(l.transmit(now, 1000), Fate::Dropped(DropReason::Queue));
    l.set_up(false);
    l.set_up(true);
    assert_eq!(
        arrival(l.transmit(now, 1000)),
        Some(now + Duration::from_millis(8))
    );
}

#[test]
fn drop_tail_queue_bounds_delay_and_drops_only_when_overloaded() {
    let rate = 1_000_000;
    let queue_bytes = 6_000;
    let params = LinkParams {
        rate_bps: Some(rate),
        queue_bytes,
        mtu: 1500,
        delay: Duration::from_millis(7),
        ..LinkParams::ideal()
    };
    // Bound: the whole queue's worth of line time, plus rounding of one byte.
    let bound = serialization(queue_bytes + 1, rate);
    let packet_time = serialization(1000, rate);

    // Overloaded: 1000 bytes every 4 ms is 2 Mbit/s.
    let mut l = link(params.clone(), 13);
    let fates = send_train(&mut l, Instant::now(), 2000, Duration::from_millis(4), 1000);
    let mut worst = Duration::ZERO;
    for &(now, fate) in &fates {
        if let Some(at) = arrival(fate) {
            let queueing = at - now - params.delay;
            assert!(queueing <= bound, "delay {queueing:?} beyond {bound:?}");
            worst = worst.max(queueing);
        }
    }
    assert!(
        worst + packet_time >= bound,
        "queue never filled: {worst:?}"
    );
    // About half the offered load is dropped.
    let dropped = l.stats().dropped_queue;
    assert!((900..1100).contains(&dropped), "{:?}", l.stats());

    // Under capacity: 1000 bytes every 10 ms is 0.8 Mbit/s.
    let mut l = link(params.clone(), 13);
    let fates = send_train(
        &mut l,
        Instant::now(),
        2000,
        Duration::from_millis(10),
        1000,
    );
    for &(now, fate) in &fates {
        assert_eq!(arrival(fate), Some(now + packet_time + params.delay));
    }
    assert_eq!(l.stats().dropped_queue, 0);
}

#[test]
fn lost_packets_still_use_the_line() {
    let mut l = link(
        LinkParams {
            rate_bps: Some(1_000_000),
            loss: Loss::Independent(1.0),
            ..LinkParams::ideal()
        },
        14,
    );
    let now = Instant::now();
    assert_eq!(l.transmit(now, 1000), Fate::Dropped(DropReason::Loss));
    l.set_params(LinkParams {
        rate_bps: Some(1_000_000),
        ..LinkParams::ideal()
    })
    .unwrap();
    assert_eq!(
        arrival(l.transmit(now, 1000)),
        Some(now + Duration::from_millis(16))
    );
}

#[test]
fn validate_rejects_each_bad_parameter_naming_it() {
    let ge = |p_good_to_bad, p_bad_to_good, loss_good, loss_bad| LinkParams {
        loss: Loss::GilbertElliott {
            p_good_to_bad,
            p_bad_to_good,
            loss_good,
            loss_bad,
        },
        ..LinkParams::ideal()
    };
    let ideal = LinkParams::ideal;
    let cases: Vec<(LinkParams, &str)> = vec![
        (
            LinkParams {
                loss: Loss::Independent(1.5),
                ..ideal()
            },
            "link loss probability 1.5 is outside [0, 1]",
        ),
        (
            LinkParams {
                loss: Loss::Independent(f64::NAN),
                ..ideal()
            },
            "loss probability NaN",
        ),
        (ge(-0.1, 0.5, 0.0, 1.0), "p_good_to_bad probability -0.1"),
        (ge(0.1, 2.0, 0.0, 1.0), "p_bad_to_good probability 2"),
        (
            ge(0.1, 0.5, f64::INFINITY, 1.0),
            "loss_good probability inf",
        ),
        (ge(0.1, 0.5, 0.0, 1.01), "loss_bad probability 1.01"),
        (
            LinkParams {
                duplicate: -0.5,
                ..ideal()
            },
            "duplicate probability -0.5",
        ),
        (
            LinkParams {
                reorder: 7.0,
                ..ideal()
            },
            "reorder probability 7",
        ),
        (
            LinkParams { mtu: 67, ..ideal() },
            "mtu 67 is outside [68, 65535]",
        ),
        (
            LinkParams {
                mtu: 65_536,
                ..ideal()
            },
            "mtu 65536",
        ),
        (
            LinkParams {
                rate_bps: Some(0),
                ..ideal()
            },
            "rate_bps must be positive",
        ),
        (
            LinkParams {
                rate_bps: Some(1_000),
                mtu: 1500,
                queue_bytes: 1499,
                ..ideal()
            },
            "queue_bytes 1499 is below the mtu 1500",
        ),
        (
            LinkParams {
                reorder: 0.1,
                ..ideal()
            },
            "reorder_delay must be positive",
        ),
        (
            LinkParams {
                delay: MAX_DELAY + Duration::from_nanos(1),
                ..ideal()
            },
            "link delay",
        ),
        (
            LinkParams {
                jitter: Duration::MAX,
                ..ideal()
            },
            "link jitter",
        ),
        (
            LinkParams {
                reorder: 0.1,
                reorder_delay: Duration::MAX,
                ..ideal()
            },
            "link reorder_delay",
        ),
    ];
    for (params, needle) in cases {
        let message = params.validate().expect_err(needle).to_string();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        assert!(Link::new(params.clone(), Rng::new(0)).is_err());
        let mut l = link(ideal(), 0);
        assert!(l.set_params(params).is_err());
        assert_eq!(l.params(), &ideal());
    }
    // The edges are fine.
    let edge = LinkParams {
        loss: Loss::Independent(1.0),
        mtu: MIN_MTU,
        rate_bps: Some(1),
        queue_bytes: MIN_MTU,
        duplicate: 0.0,
        reorder: 1.0,
        reorder_delay: Duration::from_nanos(1),
        delay: MAX_DELAY,
        ..ideal()
    };
    assert_eq!(edge.validate(), Ok(()));
    assert_eq!(LinkParams::default(), ideal());
}

fn busy_params() -> LinkParams {
    LinkParams {
        delay: Duration::from_millis(10),
        jitter: Duration::from_millis(5),
        loss: Loss::GilbertElliott {
            p_good_to_bad: 0.05,
            p_bad_to_good: 0.3,
            loss_good: 0.01,
            loss_bad: 0.5,
        },
        rate_bps: Some(5_000_000),
        queue_bytes: 20_000,
        mtu: 1500,
        duplicate: 0.05,
        reorder: 0.05,
        reorder_delay: Duration::from_millis(3),
    }
}

#[test]
fn same_seed_same_fates_different_seed_differs() {
    let base = Instant::now();
    let run = |seed| {
        let mut l = link(busy_params(), seed);
        let fates: Vec<_> = (0..3000u32)
            .map(|i| {
                let now = base + Duration::from_millis(1) * i;
                // About 6.4 Mbit/s of varying sizes on 5 Mbit/s: the queue overflows.
                l.transmit(now, 200 + (i as usize * 37) % 1200)
            })
            .collect();
        fates
    };
    let a = run(42);
    assert_eq!(a, run(42));
    assert_ne!(a, run(43));
    // Every effect shows up in this run.
    assert!(a.contains(&Fate::Dropped(DropReason::Loss)));
    assert!(a.contains(&Fate::Dropped(DropReason::Queue)));
    assert!(a.iter().any(|f| matches!(
        f,
        Fate::Delivered {
            duplicate_at: Some(_),
            ..
        }
    )));
}

#[test]
fn changing_one_effect_leaves_the_loss_pattern_alone() {
    let base = LinkParams {
        loss: Loss::Independent(0.2),
        ..LinkParams::ideal()
    };
    let with_dup = LinkParams {
        duplicate: 0.5,
        jitter: Duration::from_millis(1),
        ..base.clone()
    };
    let drops = |params: LinkParams| {
        let mut l = link(params, 99);
        let now = Instant::now();
        (0..1000)
            .map(|_| matches!(l.transmit(now, 100), Fate::Dropped(_)))
            .collect::<Vec<_>>()
    };
    assert_eq!(drops(base), drops(with_dup));
}
