//! The demo catalogue `boxoffice dev` loads through the admin API: real-shaped seat
//! maps, performers, and a few dozen events including general admission.

use anyhow::{bail, Context};
use serde_json::{json, Value};

fn rows(names: &[&str], seats: u32, price_cents: u64) -> Vec<Value> {
    names
        .iter()
        .map(|n| json!({"name": n, "seats": seats, "price_cents": price_cents}))
        .collect()
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

async fn post(
    http: &reqwest::Client,
    nodes: &[String],
    path: &str,
    token: &str,
    body: Value,
    key: &str,
) -> anyhow::Result<Value> {
    let mut last = String::new();
    // Any node accepts admin writes; try the next one if a node does not answer.
    for node in nodes.iter().cycle().take(nodes.len() * 3) {
        match http
            .post(format!("http://{node}{path}"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return Ok(r.json().await?),
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
    let venues = vec![
        json!({"name": "Madison Square Garden", "city": "New York", "lat": 40.7505, "lon": -73.9934, "sections": [
            {"name": "Floor", "rows": rows(&as_refs(&lettered(10)), 20, 25000)},
            {"name": "Lower Bowl", "rows": rows(&as_refs(&numbered(15)), 30, 15000)},
            {"name": "Upper Bowl", "rows": rows(&as_refs(&numbered(20)), 40, 8000)},
        ]}),
        json!({"name": "Royal Albert Hall", "city": "London", "lat": 51.5009, "lon": -0.1774, "sections": [
            {"name": "Stalls", "rows": rows(&as_refs(&lettered(20)), 25, 9500)},
            {"name": "Circle", "rows": rows(&as_refs(&lettered(8)), 30, 6500)},
            {"name": "Gallery", "rows": rows(&as_refs(&lettered(5)), 40, 3500)},
        ]}),
        json!({"name": "Sydney Opera House Concert Hall", "city": "Sydney", "lat": -33.8568, "lon": 151.2153, "sections": [
            {"name": "Stalls", "rows": rows(&as_refs(&lettered(26)), 28, 12000)},
            {"name": "Balcony", "rows": rows(&as_refs(&lettered(12)), 30, 7000)},
        ]}),
        json!({"name": "Red Rocks Amphitheatre", "city": "Morrison", "lat": 39.6654, "lon": -105.2057, "sections": [
            {"name": "Reserved", "rows": rows(&as_refs(&numbered(30)), 50, 9000)},
        ]}),
        json!({"name": "O2 Academy Brixton", "city": "London", "lat": 51.4650, "lon": -0.1150,
            "general_admission": {"capacity": 4921, "price_cents": 4500}}),
    ];
    let mut venue_ids = Vec::new();
    for (i, v) in venues.into_iter().enumerate() {
        let r = post(
            http,
            nodes,
            "/admin/v1/venues",
            admin_token,
            v,
            &format!("demo-venue-{i}"),
        )
        .await?;
        venue_ids.push(r["venue_id"].as_u64().context("venue_id missing")?);
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
        let r = post(
            http,
            nodes,
            "/admin/v1/performers",
            admin_token,
            json!({"name": name, "description": description}),
            &format!("demo-performer-{i}"),
        )
        .await?;
        performer_ids.push(r["performer_id"].as_u64().context("performer_id missing")?);
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
        let body = json!({
            "name": format!("{} — {}", performers[p].0, tours[i % tours.len()]),
            "description": format!("{} at {}", performers[p].1, ["Madison Square Garden", "Royal Albert Hall", "Sydney Opera House", "Red Rocks", "Brixton Academy"][v]),
            "category": performers[p].2,
            "venue_id": venue_ids[v],
            "performer_ids": [performer_ids[p]],
            "starts_at": format!("2027-{month:02}-{day:02}T20:00:00Z"),
            "hold_ttl_s": 600,
            "per_user_cap": if v == 4 { 2 } else { 6 },
        });
        post(
            http,
            nodes,
            "/admin/v1/events",
            admin_token,
            body,
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
