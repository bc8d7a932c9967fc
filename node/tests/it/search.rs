//! Search on every node: after creates and updates, restarts, snapshot
//! installs, and the loss of an index.

use std::time::{Duration, Instant};

use boxoffice_client::{NewEvent, NewLayout, NewVenue, Selection};
use serde_json::Value;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_on_every_node_and_after_index_loss() {
    let mut cluster = TestCluster::start(3, 1, "").await;
    let a = cluster.admin.clone();
    let london = a
        .create_venue(&NewVenue::new(
            "Royal Albert Hall",
            "London",
            51.5,
            -0.17,
            NewLayout::Seated(vec![("Stalls".into(), vec![("A".into(), 5, 100)])]),
        ))
        .await
        .unwrap()
        .venue_id;
    let nyc = a
        .create_venue(&NewVenue::new(
            "Madison Square Garden",
            "New York",
            40.7,
            -73.9,
            NewLayout::GeneralAdmission {
                capacity: 10,
                price_cents: 100,
            },
        ))
        .await
        .unwrap()
        .venue_id;
    let taylor = a
        .create_performer(&performer("Taylor Swift", "pop"))
        .await
        .unwrap()
        .performer_id;
    let owls = a
        .create_performer(&performer("The Midnight Owls", "jazz"))
        .await
        .unwrap()
        .performer_id;
    let mk = |name: &str, cat: &str, venue: u64, perf: u64, day: u32| NewEvent {
        name: name.into(),
        description: format!("{name} live"),
        category: cat.into(),
        venue_id: venue,
        performer_ids: vec![perf],
        starts_at: format!("2030-03-{day:02}T20:00:00Z"),
        hold_ttl_s: None,
        per_user_cap: None,
    };
    let e1 = a
        .create_event(&mk("Taylor Swift Eras", "concert", london, taylor, 10))
        .await
        .unwrap()
        .event_id;
    let e2 = a
        .create_event(&mk("Taylor Swift Eras", "concert", nyc, taylor, 20))
        .await
        .unwrap()
        .event_id;
    let e3 = a
        .create_event(&mk("Midnight Jazz", "jazz", london, owls, 15))
        .await
        .unwrap()
        .event_id;
    let e4 = a
        .create_event(&mk("Taylored Suits Fashion Show", "theatre", nyc, owls, 5))
        .await
        .unwrap()
        .event_id;
    let ids = |v: &Value| -> Vec<u64> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["event_id"].as_u64().unwrap())
            .collect()
    };

    // Every node's own index converges on the catalogue.
    for n in &cluster.nodes {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (s, v) = search(&n.addr, "sort=date").await;
            if s == 200 && v["total"] == 4 {
                assert_eq!(ids(&v), vec![e4, e1, e3, e2], "date order on node {}", n.id);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} index did not converge: {s} {v}",
                n.id
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let addr = cluster.nodes[1].addr.clone();
    // Typos, and exact above fuzzy.
    let (_, v) = search(&addr, "q=tayler%20swfit").await;
    let got = ids(&v);
    assert!(got.contains(&e1) && got.contains(&e2), "fuzzy: {v}");
    let (_, v) = search(&addr, "q=taylor").await;
    let got = ids(&v);
    assert_eq!(
        got.len(),
        3,
        "taylor matches both tours exactly and 'taylored' by typo tolerance: {v}"
    );
    assert_eq!(
        *got.last().unwrap(),
        e4,
        "the fuzzy match ranks below exact ones: {v}"
    );
    // Prefix (type-ahead).
    let (_, v) = search(&addr, "q=midn").await;
    // e3 has the word in its name and performer; e4 only through its performer.
    assert_eq!(ids(&v), vec![e3, e4], "prefix: {v}");
    // Filters alone and combined.
    let (_, v) = search(&addr, "city=london&sort=date").await;
    assert_eq!(ids(&v), vec![e1, e3]);
    let (_, v) = search(&addr, "category=concert&city=New%20York").await;
    assert_eq!(ids(&v), vec![e2]);
    let (_, v) = search(&addr, &format!("performer_id={owls}&sort=date")).await;
    assert_eq!(ids(&v), vec![e4, e3]);
    let (_, v) = search(&addr, &format!("venue_id={nyc}&q=taylor")).await;
    assert!(ids(&v).contains(&e2) && !ids(&v).contains(&e1));
    let (_, v) = search(
        &addr,
        "from=2030-03-10T00:00:00Z&to=2030-03-15T23:59:59Z&sort=date",
    )
    .await;
    assert_eq!(ids(&v), vec![e1, e3]);
    // Pagination: no duplicates, no gaps.
    let mut paged = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let q = match &token {
            Some(t) => format!("sort=date&page_size=3&page_token={t}"),
            None => "sort=date&page_size=3".to_string(),
        };
        let (_, v) = search(&addr, &q).await;
        paged.extend(ids(&v));
        match v["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(paged, vec![e4, e1, e3, e2]);
    // Bad parameters name the parameter.
    for (q, param) in [
        ("sort=popular", "sort"),
        ("from=2030-03-10T00:00:00Z&to=2030-03-01T00:00:00Z", "to"),
        ("from=yesterday", "from"),
        ("page_size=1000", "page_size"),
        ("page_token=zzz", "page_token"),
        ("performer_id=abc", "performer_id"),
        ("colour=red", "colour"),
        ("radius_km=-1&lat=1&lon=1", "radius_km"),
    ] {
        let (s, v) = search(&addr, q).await;
        assert_eq!((s, v["parameter"].as_str()), (400, Some(param)), "{q}: {v}");
    }

    // Geo: the hall is ~4.9 km from this point; radius boundaries either side.
    let (_, v) = search(&addr, "lat=51.5&lon=-0.1&radius_km=6&sort=date").await;
    assert_eq!(ids(&v), vec![e1, e3], "{v}");
    assert!(
        (v["results"][0]["distance_km"].as_f64().unwrap() - 4.85).abs() < 0.1,
        "{v}"
    );
    let (_, v) = search(&addr, "lat=51.5&lon=-0.1&radius_km=4").await;
    assert_eq!(v["total"], 0, "{v}");
    let (_, v) = search(&addr, "lat=40.7&lon=-74.0&sort=distance").await;
    let got = ids(&v);
    assert_eq!(got.len(), 4);
    assert!(
        [e2, e4].contains(&got[0]) && [e2, e4].contains(&got[1]),
        "New York events first: {v}"
    );
    // Availability: sell out the general-admission event (capacity 10).
    let (_, v) = search(&addr, &format!("q=taylor&venue_id={nyc}")).await;
    assert_eq!(
        (
            v["results"][0]["available"].as_u64(),
            v["results"][0]["min_price_cents"].as_u64()
        ),
        (Some(10), Some(100)),
        "{v}"
    );
    for buyer in ["ga-1", "ga-2"] {
        let c = cluster.user(buyer);
        let h = c.hold(e2, Selection::Quantity(5)).await.unwrap();
        c.confirm(&h.hold_id, "pay").await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, v) = search(&addr, "available_only=true&sort=date").await;
        if !ids(&v).contains(&e2) {
            assert_eq!(ids(&v), vec![e4, e1, e3]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sold-out event still listed as available: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (q, param) in [
        ("radius_km=5", "radius_km"),
        ("sort=distance", "sort"),
        ("lat=100&lon=0", "lat"),
        ("lat=10", "lon"),
        ("available_only=maybe", "available_only"),
    ] {
        let (s, v) = search(&addr, q).await;
        assert_eq!((s, v["parameter"].as_str()), (400, Some(param)), "{q}: {v}");
    }

    // The client library pages through the same results.
    let c = cluster.user("searcher");
    let mut q = boxoffice_client::SearchQuery {
        q: Some("tayler swfit".into()),
        page_size: Some(1),
        ..Default::default()
    };
    let mut via_client = Vec::new();
    for _ in 0..5 {
        let page = c.search(&q).await.unwrap();
        assert_eq!(page.total, 2);
        via_client.extend(page.results.iter().map(|h| h.event_id));
        match page.next_page_token {
            Some(t) => q.page_token = Some(t),
            None => break,
        }
    }
    via_client.sort();
    assert_eq!(via_client, vec![e1, e2]);

    // Updates and bulk creates reach every node's index and cached event views,
    // including a node that was down when they were applied.
    let event_name = |addr: String, id: u64| async move {
        let v: Value = reqwest::get(format!("http://{addr}/v1/events/{id}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["event"]["name"].as_str().map(str::to_string)
    };
    for n in &cluster.nodes {
        assert_eq!(
            event_name(n.addr.clone(), e3).await.as_deref(),
            Some("Midnight Jazz"),
            "cached view on node {}",
            n.id
        );
    }
    cluster.kill(0);
    let update = boxoffice_client::EventUpdate {
        name: Some("Moonlight Gala".into()),
        category: Some("gala".into()),
        ..Default::default()
    };
    a.update_event(e3, &update).await.unwrap();
    let bad = a
        .update_event(e3, &boxoffice_client::EventUpdate::default())
        .await;
    assert!(bad.is_err(), "an empty update is refused");
    let batch: Vec<NewEvent> = (1..=3)
        .map(|i| mk(&format!("Bulk Loaded Night {i}"), "club", nyc, owls, 20 + i))
        .collect();
    let bulk: Vec<u64> = a
        .create_events(&batch)
        .await
        .unwrap()
        .events
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(bulk.len(), 3);
    cluster.spawn(0);
    cluster.wait_healthy(0).await;
    for n in &cluster.nodes {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let name = event_name(n.addr.clone(), e3).await;
            let (_, by_new_name) = search(&n.addr, "q=moonlight").await;
            let (_, by_category) = search(&n.addr, "category=gala").await;
            let (_, bulk_found) = search(&n.addr, "q=bulk%20loaded&sort=date").await;
            if name.as_deref() == Some("Moonlight Gala")
                && by_new_name["results"].is_array()
                && ids(&by_new_name) == vec![e3]
                && ids(&by_category) == vec![e3]
                && ids(&bulk_found) == bulk
            {
                let (_, by_old_category) = search(&n.addr, "category=jazz").await;
                assert_eq!(
                    by_old_category["total"], 0,
                    "old category still indexed on node {}: {by_old_category}",
                    n.id
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not converge after update: {name:?} {by_new_name} {bulk_found}",
                n.id
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Index directory deleted: the node rebuilds it from its replica at start-up.
    cluster.kill(2);
    let data_dir = cluster.local.nodes[&cluster.nodes[2].id].data_dir.clone();
    std::fs::remove_dir_all(data_dir.join("search")).unwrap();
    cluster.spawn(2);
    cluster.wait_healthy(2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = search(&cluster.nodes[2].addr, "q=tayler%20swfit").await;
        let (_, updated) = search(&cluster.nodes[2].addr, "q=moonlight").await;
        if s == 200 && ids(&v).len() == 2 && updated["total"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "index not rebuilt: {s} {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `check` passes on `addr`'s answer to `path`, or fails with it.
async fn eventually(addr: &str, path: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if status == 200 && check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} on {addr}: {status} {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn facet(v: &Value, name: &str) -> Vec<(String, u64)> {
    v["facets"][name]
        .as_array()
        .unwrap_or_else(|| panic!("no {name} facet in {v}"))
        .iter()
        .map(|f| {
            (
                f["value"].as_str().unwrap().to_string(),
                f["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn suggested(v: &Value) -> Vec<(String, String)> {
    v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_string(),
                s["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn facets_and_suggestions_on_every_node() {
    let cluster = TestCluster::start(3, 1, "").await;
    let a = cluster.admin.clone();
    let venue = |name: &str, city: &str, lat: f64, lon: f64| {
        NewVenue::new(
            name,
            city,
            lat,
            lon,
            NewLayout::GeneralAdmission {
                capacity: 10,
                price_cents: 100,
            },
        )
    };
    let hall = a
        .create_venue(&venue("Royal Albert Hall", "London", 51.5, -0.17))
        .await
        .unwrap()
        .venue_id;
    let garden = a
        .create_venue(&venue("Madison Square Garden", "New York", 40.7, -73.9))
        .await
        .unwrap()
        .venue_id;
    let taylor = a
        .create_performer(&performer("Taylor Swift", "pop"))
        .await
        .unwrap()
        .performer_id;
    let owls = a
        .create_performer(&performer("The Midnight Owls", "jazz"))
        .await
        .unwrap()
        .performer_id;
    let mk = |name: &str, cat: &str, venue: u64, perf: u64, when: &str| NewEvent {
        name: name.into(),
        description: format!("{name} live"),
        category: cat.into(),
        venue_id: venue,
        performer_ids: vec![perf],
        starts_at: when.into(),
        hold_ttl_s: None,
        per_user_cap: None,
    };
    let events = [
        mk(
            "Eras Tour London",
            "concert",
            hall,
            taylor,
            "2030-03-10T20:00:00Z",
        ),
        mk(
            "Eras Tour New York",
            "concert",
            garden,
            taylor,
            "2030-03-20T20:00:00Z",
        ),
        mk("Midnight Jazz", "jazz", hall, owls, "2030-04-01T20:00:00Z"),
        mk(
            "Owls Unplugged",
            "concert",
            hall,
            owls,
            "2030-04-30T23:30:00Z",
        ),
    ];
    for e in &events {
        a.create_event(e).await.unwrap();
    }

    for n in &cluster.nodes {
        // Facets count every match, after the filters; months are UTC.
        let v = eventually(
            &n.addr,
            "/v1/search?facets=category,city,month&page_size=1",
            "facets over all four events",
            |v| v["total"] == 4,
        )
        .await;
        assert_eq!(
            facet(&v, "category"),
            vec![("concert".into(), 3), ("jazz".into(), 1)]
        );
        assert_eq!(
            facet(&v, "city"),
            vec![("london".into(), 3), ("new york".into(), 1)]
        );
        assert_eq!(
            facet(&v, "month"),
            vec![("2030-03".into(), 2), ("2030-04".into(), 2)]
        );
        assert_eq!(v["results"].as_array().unwrap().len(), 1, "{v}");
        let (_, v) = search(&n.addr, "facets=month,category&city=london&q=owls").await;
        assert_eq!(v["total"], 2, "{v}");
        assert_eq!(
            facet(&v, "category"),
            vec![("concert".into(), 1), ("jazz".into(), 1)]
        );
        assert_eq!(facet(&v, "month"), vec![("2030-04".into(), 2)]);
        assert!(v["facets"].get("city").is_none(), "only asked facets: {v}");
        let (_, v) = search(&n.addr, "from=2030-03-15T00:00:00Z&facets=city").await;
        assert_eq!(
            facet(&v, "city"),
            vec![("london".into(), 2), ("new york".into(), 1)],
            "{v}"
        );
        let (_, v) = search(&n.addr, "q=eras").await;
        assert!(v.get("facets").is_none(), "no facets unless asked: {v}");

        // Suggestions: performers and venues by prefix and despite typos, and
        // upcoming events.
        let v = eventually(
            &n.addr,
            "/v1/search/suggest?q=tay",
            "performer by prefix",
            // The names index is built within `search.suggest_refresh_ms`
            // of their creation; events are searchable sooner.
            |v| {
                v["suggestions"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["kind"] == "performer"))
            },
        )
        .await;
        let got = suggested(&v);
        assert_eq!(got[0], ("performer".into(), "Taylor Swift".into()), "{v}");
        assert!(
            got.contains(&("event".into(), "Eras Tour London".into())),
            "events of the performer: {v}"
        );
        // A typed phrase: events whose name (or performer, or venue) goes on
        // from it.
        let v = eventually(
            &n.addr,
            "/v1/search/suggest?q=eras%20tour%20l",
            "phrase",
            |_| true,
        )
        .await;
        let events: Vec<_> = suggested(&v)
            .into_iter()
            .filter(|(kind, _)| kind == "event")
            .collect();
        assert_eq!(
            events,
            vec![("event".into(), "Eras Tour London".into())],
            "{v}"
        );
        let v = eventually(&n.addr, "/v1/search/suggest?q=tayler%20swi", "typo", |_| {
            true
        })
        .await;
        assert_eq!(
            suggested(&v).first(),
            Some(&("performer".into(), "Taylor Swift".into())),
            "{v}"
        );
        let v = eventually(&n.addr, "/v1/search/suggest?q=madisn%20sq", "venue", |_| {
            true
        })
        .await;
        assert_eq!(
            suggested(&v).first(),
            Some(&("venue".into(), "Madison Square Garden".into())),
            "{v}"
        );
        assert_eq!(v["suggestions"][0]["city"], "New York", "{v}");
        let v = eventually(
            &n.addr,
            "/v1/search/suggest?q=midnight&limit=2",
            "limit",
            |_| true,
        )
        .await;
        assert_eq!(v["suggestions"].as_array().unwrap().len(), 2, "{v}");
        let v = eventually(&n.addr, "/v1/search/suggest?q=zzzzqqq", "nothing", |_| true).await;
        assert_eq!(v["suggestions"], serde_json::json!([]), "{v}");
    }

    // A performer created now is suggested on every node within a second or so.
    a.create_performer(&performer("Zanzibar Quartet", "strings"))
        .await
        .unwrap();
    for n in &cluster.nodes {
        eventually(
            &n.addr,
            "/v1/search/suggest?q=zanzi",
            "new performer",
            |v| suggested(v).first() == Some(&("performer".into(), "Zanzibar Quartet".into())),
        )
        .await;
    }

    // Bad input names the parameter and changes nothing.
    let addr = &cluster.nodes[0].addr;
    for (path, param) in [
        ("/v1/search?facets=venue", "facets"),
        ("/v1/search?facets=city,,bogus", "facets"),
        ("/v1/search/suggest", "q"),
        ("/v1/search/suggest?q=a&limit=0", "limit"),
        ("/v1/search/suggest?q=a&limit=21", "limit"),
        ("/v1/search/suggest?q=a&limit=x", "limit"),
        ("/v1/search/suggest?q=a&page_size=3", "page_size"),
    ] {
        let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            (status, v["parameter"].as_str()),
            (400, Some(param)),
            "{path}: {v}"
        );
    }
    let r = reqwest::get(format!(
        "http://{addr}/v1/search/suggest?q={}",
        "x".repeat(5000)
    ))
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // The client library asks for both.
    let c = cluster.user("searcher");
    let page = c
        .search(&boxoffice_client::SearchQuery {
            category: Some("concert".into()),
            facets: vec!["city".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 3);
    let cities = page.facets.and_then(|f| f.city).unwrap();
    assert_eq!(
        cities
            .iter()
            .map(|f| (f.value.as_str(), f.count))
            .collect::<Vec<_>>(),
        vec![("london", 2), ("new york", 1)]
    );
    let s = c.suggest("owl", Some(3)).await.unwrap();
    assert_eq!(s.suggestions[0].kind, "performer");
    assert_eq!(s.suggestions[0].text, "The Midnight Owls");
    assert!(s.suggestions.len() <= 3);
}
