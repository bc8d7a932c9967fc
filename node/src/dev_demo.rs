//! The demo catalogue `boxoffice dev` loads through the admin API: real-shaped seat
//! maps, performers, and a few dozen events including general admission.

use anyhow::{bail, Context};
use boxoffice_api::{
    NewEvent, NewPerformer, NewRow, NewSection, NewVenue, PerformerCreated, VenueCreated,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn section(name: &str, rows: &[&str], seats: u32, price_cents: u64) -> NewSection {
    NewSection {
        name: name.into(),
        rows: rows
            .iter()
            .map(|n| NewRow {
                name: n.to_string(),
                seats,
                price_cents,
            })
            .collect(),
    }
}

fn numbered(n: u32) -> Vec<String> {
    (1..=n).map(|i| i.to_string()).collect()
}

fn lettered(n: u32) -> Vec<String> {
    (0..n)
        .map(|i| ((b'A' + i as u8) as char).to_string())
        .collect()
}

fn as_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

async fn post<B: Serialize, T: DeserializeOwned>(
    http: &reqwest::Client,
    nodes: &[String],
    path: &str,
    token: &str,
    body: &B,
    key: &str,
) -> anyhow::Result<T> {
    let mut last = String::new();
    // Any node accepts admin writes; try the next one if a node does not answer.
    for node in nodes.iter().cycle().take(nodes.len() * 3) {
        match http
            .post(format!("http://{node}{path}"))
            .bearer_auth(token)
            .header(boxoffice_api::IDEMPOTENCY_KEY_HEADER, key)
            .json(body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                return r.json().await.with_context(|| format!("{path}: answer"))
            }
            Ok(r) if r.status().is_server_error() => last = r.text().await.unwrap_or_default(),
            Ok(r) => bail!("{path}: {}", r.text().await.unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    bail!("{path}: {last}")
}

/// Loads the demo catalogue; returns a one-line summary.
pub async fn load(
    http: &reqwest::Client,
    nodes: &[String],
    admin_token: &str,
) -> anyhow::Result<String> {
    let l = |n| lettered(n);
    let d = |n| numbered(n);
    let venues = vec![
        NewVenue::seated(
            "Madison Square Garden",
            "New York",
            40.7505,
            -73.9934,
            vec![
                section("Floor", &as_refs(&l(10)), 20, 25000),
                section("Lower Bowl", &as_refs(&d(15)), 30, 15000),
                section("Upper Bowl", &as_refs(&d(20)), 40, 8000),
            ],
        ),
        NewVenue::seated(
            "Royal Albert Hall",
            "London",
            51.5009,
            -0.1774,
            vec![
                section("Stalls", &as_refs(&l(20)), 25, 9500),
                section("Circle", &as_refs(&l(8)), 30, 6500),
                section("Gallery", &as_refs(&l(5)), 40, 3500),
            ],
        ),
        NewVenue::seated(
            "Sydney Opera House Concert Hall",
            "Sydney",
            -33.8568,
            151.2153,
            vec![
                section("Stalls", &as_refs(&l(26)), 28, 12000),
                section("Balcony", &as_refs(&l(12)), 30, 7000),
            ],
        ),
        NewVenue::seated(
            "Red Rocks Amphitheatre",
            "Morrison",
            39.6654,
            -105.2057,
            vec![section("Reserved", &as_refs(&d(30)), 50, 9000)],
        ),
        NewVenue::general_admission("O2 Academy Brixton", "London", 51.4650, -0.1150, 4921, 4500),
    ];
    let mut venue_ids = Vec::new();
    for (i, v) in venues.iter().enumerate() {
        let r: VenueCreated = post(
            http,
            nodes,
            "/admin/v1/venues",
            admin_token,
            v,
            &format!("demo-venue-{i}"),
        )
        .await?;
        venue_ids.push(r.venue_id);
    }
    let performers = [
        ("Taylor Swift", "Singer-songwriter; stadium pop", "concert"),
        ("The Lumineers", "Folk rock band from Denver", "concert"),
        (
            "London Symphony Orchestra",
            "Orchestra in residence at the Barbican",
            "classical",
        ),
        (
            "Hamilton Touring Company",
            "The musical, on tour",
            "theatre",
        ),
        ("Knicks", "New York basketball", "sports"),
        ("Arctic Monkeys", "Indie rock from Sheffield", "concert"),
        ("Trevor Noah", "Stand-up comedy", "comedy"),
        ("Yo-Yo Ma", "Cellist", "classical"),
        ("Fred again..", "Electronic producer and DJ", "concert"),
        ("Cirque du Soleil", "Acrobatic theatre", "theatre"),
    ];
    let mut performer_ids = Vec::new();
    for (i, (name, description, _)) in performers.iter().enumerate() {
        let body = NewPerformer {
            name: name.to_string(),
            description: description.to_string(),
        };
        let r: PerformerCreated = post(
            http,
            nodes,
            "/admin/v1/performers",
            admin_token,
            &body,
            &format!("demo-performer-{i}"),
        )
        .await?;
        performer_ids.push(r.performer_id);
    }
    let tours = [
        "World Tour",
        "Live",
        "Summer Nights",
        "An Evening With",
        "Encore",
    ];
    let events_n = 36;
    for i in 0..events_n {
        let p = i % performers.len();
        let v = i % venue_ids.len();
        let day = 10 + (i * 3) % 18;
        let month = 1 + (i * 3) / 18 % 12;
        let venue = [
            "Madison Square Garden",
            "Royal Albert Hall",
            "Sydney Opera House",
            "Red Rocks",
            "Brixton Academy",
        ][v];
        let body = NewEvent {
            name: format!("{} — {}", performers[p].0, tours[i % tours.len()]),
            description: format!("{} at {venue}", performers[p].1),
            category: performers[p].2.to_string(),
            venue_id: venue_ids[v],
            performer_ids: vec![performer_ids[p]],
            starts_at: format!("2027-{month:02}-{day:02}T20:00:00Z"),
            hold_ttl_s: Some(600),
            per_user_cap: Some(if v == 4 { 2 } else { 6 }),
        };
        let _: boxoffice_api::EventCreated = post(
            http,
            nodes,
            "/admin/v1/events",
            admin_token,
            &body,
            &format!("demo-event-{i}"),
        )
        .await?;
    }
    Ok(format!(
        "{} venues, {} performers, {events_n} events (one general-admission venue)",
        venue_ids.len(),
        performer_ids.len()
    ))
}
