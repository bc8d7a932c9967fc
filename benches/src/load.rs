//! Loads a generated catalogue into a running cluster through the admin API:
//! venues and performers one by one (concurrently), events in batches.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use boxoffice_client::{Client, NewEvent, NewLayout, NewPerformer, NewVenue};
use futures::{stream, StreamExt, TryStreamExt};

use crate::catalogue::{rfc3339, Catalogue};

/// Events per batch request (the node's default body limit is 256 KiB).
pub const EVENTS_PER_BATCH: usize = 400;
/// Catalogue writes in flight at once.
pub const LOAD_PARALLEL: usize = 4;

pub async fn load(admin: &Client, cat: &Catalogue) -> anyhow::Result<()> {
    let start = Instant::now();
    let bar = indicatif::ProgressBar::new(
        (cat.venues.len() + cat.performers.len() + cat.sizes.events) as u64,
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} {per_sec} {msg}",
        )
        .expect("static template"),
    );
    bar.set_message("venues");
    let venue_ids: Vec<u64> = stream::iter(cat.venues.iter())
        .map(|v| {
            let bar = bar.clone();
            async move {
                let layout = match v.seated_rows {
                    Some(rows) => NewLayout::Seated(
                        (0..rows.div_ceil(50))
                            .map(|s| {
                                (
                                    format!("S{s}"),
                                    (s * 50..(s * 50 + 50).min(rows))
                                        .map(|r| (format!("R{r}"), 20, v.price_cents))
                                        .collect(),
                                )
                            })
                            .collect(),
                    ),
                    None => NewLayout::GeneralAdmission {
                        capacity: v.capacity,
                        price_cents: v.price_cents,
                    },
                };
                let id = admin
                    .create_venue(&NewVenue::new(v.name.clone(), v.city, v.lat, v.lon, layout))
                    .await?
                    .venue_id;
                bar.inc(1);
                anyhow::Ok(id)
            }
        })
        .buffered(LOAD_PARALLEL * 4)
        .try_collect()
        .await?;
    bar.set_message("performers");
    let performer_ids: Vec<u64> = stream::iter(cat.performers.iter())
        .map(|p| {
            let bar = bar.clone();
            async move {
                let id = admin
                    .create_performer(&NewPerformer {
                        name: p.clone(),
                        description: String::new(),
                    })
                    .await?
                    .performer_id;
                bar.inc(1);
                anyhow::Ok(id)
            }
        })
        .buffered(LOAD_PARALLEL * 4)
        .try_collect()
        .await?;
    bar.set_message("events");
    let (venue_ids, performer_ids) = (Arc::new(venue_ids), Arc::new(performer_ids));
    let batches = {
        let mut all = Vec::new();
        let mut cur = Vec::with_capacity(EVENTS_PER_BATCH);
        for e in cat.events() {
            cur.push(NewEvent {
                name: e.name,
                description: e.description,
                category: e.category.into(),
                venue_id: venue_ids[e.venue],
                performer_ids: e.performers.iter().map(|&p| performer_ids[p]).collect(),
                starts_at: rfc3339(e.starts_at_ms),
                hold_ttl_s: None,
                per_user_cap: None,
            });
            if cur.len() == EVENTS_PER_BATCH {
                all.push(std::mem::take(&mut cur));
            }
        }
        if !cur.is_empty() {
            all.push(cur);
        }
        all
    };
    stream::iter(batches)
        .map(|b| {
            let bar = bar.clone();
            async move {
                let ids = admin
                    .create_events(&b)
                    .await
                    .context("creating a batch of events")?;
                bar.inc(ids.events.len() as u64);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(LOAD_PARALLEL)
        .try_collect::<Vec<()>>()
        .await?;
    bar.finish();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "loaded {} venues, {} performers, {} events in {secs:.0} s ({:.0} events/s)",
        cat.venues.len(),
        cat.performers.len(),
        cat.sizes.events,
        cat.sizes.events as f64 / secs
    );
    Ok(())
}
