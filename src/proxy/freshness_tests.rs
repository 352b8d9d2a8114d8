use super::*;

fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
    let mut r = ResponseHeader::build(status, None).unwrap();
    for (k, v) in headers {
        r.append_header(k.to_string(), *v).unwrap();
    }
    r
}

fn bounds() -> RouteCache {
    RouteCache {
        default_ttl: Duration::ZERO,
        min_ttl: Duration::ZERO,
        max_ttl: Duration::from_secs(365 * 86400),
        enabled: true,
    }
}

fn at(now: SystemTime) -> Times {
    Times {
        request: now,
        response: now,
    }
}

fn meta(r: &ResponseHeader, now: SystemTime) -> Option<CacheMeta> {
    match verdict(&bounds(), r, r, at(now)) {
        RespCacheable::Cacheable(m) => Some(m),
        RespCacheable::Uncacheable(_) => None,
    }
}

fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

#[test]
fn age_values_follow_the_first_member_of_the_first_line() {
    for (lines, want) in [
        (&["7200"][..], 7200),
        (&["abc"], 0),
        (&["-7200"], 0),
        (&["7200.0"], 0),
        (&["7200, 0"], 7200),
        (&["0, 7200"], 0),
        (&["7200", "0"], 7200),
        (&["0", "7200"], 0),
        (&["2147483649"], MAX_AGE_VALUE),
        (&["99999999999999999999999"], MAX_AGE_VALUE),
        (&[" 30 "], 30),
    ] {
        let headers: Vec<(&str, &str)> = lines.iter().map(|v| ("age", *v)).collect();
        assert_eq!(age_value(&resp(200, &headers)), want, "{lines:?}");
    }
    assert_eq!(age_value(&resp(200, &[])), 0);
}

#[test]
fn age_and_date_shorten_freshness_and_count_in_the_epoch() {
    let now = SystemTime::now();
    // Age beyond max-age: stored stale
    let m = meta(
        &resp(200, &[("cache-control", "max-age=3600"), ("age", "7200")]),
        now,
    )
    .unwrap();
    assert!(!m.is_fresh(now));
    // Age within max-age: fresh, and a hit's age includes it
    let m = meta(
        &resp(200, &[("cache-control", "max-age=3600"), ("age", "30")]),
        now,
    )
    .unwrap();
    assert!(m.is_fresh(now + Duration::from_secs(3500)));
    assert!(!m.is_fresh(now + Duration::from_secs(3580)));
    assert!(m.age() >= Duration::from_secs(30));
    // Date in the past (apparent age) counts too
    let date = http_date(now - Duration::from_secs(7200));
    let m = meta(
        &resp(200, &[("cache-control", "max-age=3600"), ("date", &date)]),
        now,
    )
    .unwrap();
    assert!(!m.is_fresh(now));
    // Expires is relative to Date, not to now: Date 10s fast, Expires 10s after it, Age 15
    let date = http_date(now + Duration::from_secs(10));
    let exp = http_date(now + Duration::from_secs(20));
    let m = meta(
        &resp(200, &[("date", &date), ("expires", &exp), ("age", "15")]),
        now,
    )
    .unwrap();
    assert!(!m.is_fresh(now));
    let m = meta(&resp(200, &[("date", &date), ("expires", &exp)]), now).unwrap();
    assert!(m.is_fresh(now));
}

#[test]
fn a_response_delay_counts_as_age() {
    let now = SystemTime::now();
    let r = resp(200, &[("cache-control", "max-age=10"), ("age", "8")]);
    let times = Times {
        request: now - Duration::from_secs(5),
        response: now,
    };
    let RespCacheable::Cacheable(m) = verdict(&bounds(), &r, &r, times) else {
        panic!("cacheable")
    };
    assert!(
        !m.is_fresh(now),
        "8 s of Age plus 5 s upstream exceed max-age=10"
    );
}

#[test]
fn targeted_fields_take_precedence_and_invalid_ones_are_ignored() {
    let now = SystemTime::now();
    let fresh = |h: &[(&str, &str)]| meta(&resp(200, h), now).is_some_and(|m| m.is_fresh(now));
    let stored = |h: &[(&str, &str)]| meta(&resp(200, h), now).is_some();
    assert!(fresh(&[("cdn-cache-control", "max-age=3600")]));
    assert!(fresh(&[
        ("cache-control", "no-store"),
        ("cdn-cache-control", "max-age=10000")
    ]));
    assert!(!fresh(&[
        ("cache-control", "max-age=3600"),
        ("cdn-cache-control", "max-age=0")
    ]));
    assert!(!stored(&[
        ("cache-control", "max-age=10000"),
        ("cdn-cache-control", "no-store")
    ]));
    assert!(!stored(&[
        ("cache-control", "max-age=10000"),
        ("cdn-cache-control", "private")
    ]));
    assert!(!fresh(&[
        ("cache-control", "max-age=10000"),
        ("cdn-cache-control", "no-cache")
    ]));
    // a future Expires does not count when a targeted field decides
    let exp = http_date(now + Duration::from_secs(10000));
    assert!(!fresh(&[
        ("cdn-cache-control", "max-age=0"),
        ("expires", &exp)
    ]));
    // invalid dictionaries and wrongly typed values: fall back to Cache-Control
    for bad in [
        "max-age=10000, &&&&&",
        "max-age=\"10000\"",
        "max-age=-1",
        "MaX-aGe=5",
    ] {
        assert!(
            !stored(&[("cdn-cache-control", bad), ("cache-control", "no-store")]),
            "{bad}"
        );
    }
    // the edge's own field beats CDN-Cache-Control
    assert!(fresh(&[
        ("tollgate-cache-control", "max-age=60"),
        ("cdn-cache-control", "no-store")
    ]));
}

#[test]
fn stale_serving_rules() {
    let upstream_down = Error::new(ErrorType::ConnectRefused).into_up();
    let status_503 = Error::create(
        ErrorType::HTTPStatus(503),
        ErrorSource::Upstream,
        None,
        None,
    );
    let allowed =
        |cc: &str, e: Option<&Error>| may_serve_stale(&resp(200, &[("cache-control", cc)]), e);
    assert!(allowed("max-age=2", Some(&upstream_down)));
    for cc in [
        "max-age=2, must-revalidate",
        "max-age=2, proxy-revalidate",
        "max-age=2, no-cache",
        "max-age=2, s-maxage=2",
    ] {
        assert!(!allowed(cc, Some(&upstream_down)), "{cc}");
        assert!(
            !allowed(&format!("{cc}, stale-while-revalidate=60"), None),
            "{cc}"
        );
    }
    assert!(!allowed("max-age=2", Some(&status_503)));
    assert!(allowed("max-age=2, stale-if-error=60", Some(&status_503)));
    assert!(!allowed("max-age=2", None));
    assert!(allowed("max-age=1, stale-while-revalidate=60", None));
    // the windows land in the meta; revalidation requirements close them
    let now = SystemTime::now();
    let m = meta(
        &resp(
            200,
            &[("cache-control", "max-age=1, stale-while-revalidate=4")],
        ),
        now,
    );
    assert_eq!(m.unwrap().stale_while_revalidate_sec(), 4);
    let m = meta(
        &resp(200, &[("cache-control", "max-age=1, must-revalidate")]),
        now,
    )
    .unwrap();
    assert_eq!(
        (m.stale_while_revalidate_sec(), m.stale_if_error_sec()),
        (0, 0)
    );
    let m = meta(&resp(200, &[("cache-control", "max-age=1")]), now).unwrap();
    assert_eq!(m.stale_if_error_sec() as u64, STALE_ON_DISCONNECT.as_secs());
}

#[test]
fn not_stored_vary_star_set_cookie_and_no_freshness() {
    let now = SystemTime::now();
    for h in [
        &[("cache-control", "max-age=60"), ("vary", "*")][..],
        &[("cache-control", "max-age=60"), ("vary", "accept, *")],
        &[
            ("cache-control", "max-age=60"),
            ("vary", "accept"),
            ("vary", "*"),
        ],
        &[("cache-control", "max-age=60"), ("set-cookie", "a=b")],
        &[("cache-control", "max-age=60, private")],
    ] {
        assert!(meta(&resp(200, h), now).is_none(), "{h:?}");
    }
    // no freshness information: heuristically cacheable statuses take default_ttl (0 here)
    let m = meta(&resp(200, &[]), now).unwrap();
    assert!(!m.is_fresh(now));
    assert!(meta(&resp(302, &[]), now).is_none());
    assert!(meta(&resp(302, &[("cache-control", "max-age=60")]), now).is_some());
}

#[test]
fn connection_listed_fields_are_dropped() {
    let mut r = resp(
        200,
        &[
            ("connection", "a, b, content-length"),
            ("a", "1"),
            ("b", "2"),
            ("c", "3"),
            ("keep-alive", "timeout=5"),
            ("content-length", "10"),
        ],
    );
    strip_connection_fields(&mut r);
    assert!(r.headers.get("a").is_none() && r.headers.get("b").is_none());
    assert!(r.headers.get("keep-alive").is_none());
    assert_eq!(r.headers.get("c").unwrap(), "3");
    assert_eq!(r.headers.get("content-length").unwrap(), "10");
}

#[test]
fn a_304_updates_every_field_but_framing_and_cookies() {
    let mut stored = resp(
        200,
        &[
            ("test-header", "old"),
            ("content-foo", "old"),
            ("content-length", "36"),
            ("x-keep", "kept"),
            ("cache-control", "max-age=1"),
            ("vary", "a"),
        ],
    );
    let nm = resp(
        304,
        &[
            ("test-header", "new"),
            ("content-foo", "new"),
            ("content-length", "10"),
            ("cache-control", "max-age=3600"),
            ("set-cookie", "s=1"),
            ("x-multi", "1"),
            ("x-multi", "2"),
        ],
    );
    merge_not_modified(&mut stored, &nm);
    let h = &stored.headers;
    assert_eq!(h.get("test-header").unwrap(), "new");
    assert_eq!(h.get("content-foo").unwrap(), "new");
    assert_eq!(h.get("content-length").unwrap(), "36");
    assert_eq!(h.get("cache-control").unwrap(), "max-age=3600");
    assert_eq!(h.get("x-keep").unwrap(), "kept");
    assert!(h.get("set-cookie").is_none());
    assert_eq!(h.get_all("x-multi").iter().count(), 2);
    assert_eq!(stored.status.as_u16(), 200);
}

#[test]
fn a_revalidated_response_takes_its_age_from_the_304() {
    let now = SystemTime::now();
    let old_date = http_date(now - Duration::from_secs(600));
    let mut stored = resp(
        200,
        &[
            ("cache-control", "max-age=60"),
            ("age", "100"),
            ("date", &old_date),
        ],
    );
    let nm = resp(
        304,
        &[("date", &http_date(now)), ("cache-control", "max-age=60")],
    );
    merge_not_modified(&mut stored, &nm);
    let RespCacheable::Cacheable(m) = verdict(&bounds(), &stored, &nm, at(now)) else {
        panic!("cacheable")
    };
    assert!(m.is_fresh(now + Duration::from_secs(50)));
    assert!(m.age() < Duration::from_secs(5));
}
