//! boxoffice through its client library against a 3-node cluster (fsync on).

use boxoffice_client::{
    Client, ClientConfig, Consistency, NewEvent, NewLayout, NewVenue, ProblemCode, SeatStatus,
    Selection,
};
use tokio::sync::Mutex;

use super::{ConfirmOutcome, HoldOutcome, HOLD_TTL_S, ROW_SEATS};

/// The buyers' client's batching (`None`: the client library's default).
#[derive(Clone, Copy, Debug, Default)]
pub struct BatchSettings {
    pub writes_max: Option<usize>,
    pub in_flight_max: Option<usize>,
}

pub struct Boxoffice {
    pub admin: Client,
    /// One client per buyer user (sharing connections and leader hints), as a
    /// ticket site's buyers are different people: each has its own per-user cap
    /// record, not one shared by every buyer.
    buyers: Vec<Client>,
    pub user_token: String,
    venues: Mutex<std::collections::HashMap<u32, u64>>,
}

impl Boxoffice {
    /// `user_tokens`: the buyers' tokens (buyer worker w uses `w % len`).
    pub fn new(
        urls: Vec<String>,
        admin_token: &str,
        user_tokens: &[String],
        batch: BatchSettings,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!user_tokens.is_empty(), "no buyer tokens");
        let mut cfg = ClientConfig::new(urls, admin_token);
        cfg.attempts_max = 20;
        let admin = Client::new(cfg.clone())?;
        cfg.token = user_tokens[0].clone();
        cfg.attempts_max = ClientConfig::new(Vec::<String>::new(), "").attempts_max;
        if let Some(n) = batch.writes_max {
            cfg.batch_writes_max = n;
        }
        if let Some(n) = batch.in_flight_max {
            cfg.batch_in_flight_max = n;
        }
        let first = Client::new(cfg)?;
        let buyers = user_tokens
            .iter()
            .map(|t| first.with_token(t.clone()))
            .collect();
        Ok(Boxoffice {
            admin,
            buyers,
            user_token: user_tokens[0].clone(),
            venues: Mutex::new(Default::default()),
        })
    }

    fn buyer(&self, worker: usize) -> &Client {
        &self.buyers[worker % self.buyers.len()]
    }

    async fn venue(&self, seats: u32) -> anyhow::Result<u64> {
        let mut venues = self.venues.lock().await;
        if let Some(v) = venues.get(&seats) {
            return Ok(*v);
        }
        let rows = seats.div_ceil(ROW_SEATS);
        let layout = NewLayout::Seated(
            (0..rows.div_ceil(100))
                .map(|sec| {
                    (
                        format!("S{sec}"),
                        (sec * 100..(sec * 100 + 100).min(rows))
                            .map(|r| {
                                let n = ROW_SEATS.min(seats - r * ROW_SEATS);
                                (format!("R{r}"), n, 5000)
                            })
                            .collect(),
                    )
                })
                .collect(),
        );
        let id = self
            .admin
            .create_venue(&NewVenue::new(
                format!("Bench Arena {seats}"),
                "Benchtown",
                0.0,
                0.0,
                layout,
            ))
            .await?
            .venue_id;
        venues.insert(seats, id);
        Ok(id)
    }

    pub(super) async fn create_events(&self, n: usize, seats: u32) -> anyhow::Result<Vec<u64>> {
        let venue_id = self.venue(seats).await?;
        let mut ids = Vec::with_capacity(n);
        // The admin API takes events in batches of up to 400.
        let all: Vec<NewEvent> = (0..n)
            .map(|i| NewEvent {
                name: format!("Bench On-Sale {i}"),
                description: "benchmark".into(),
                category: "concert".into(),
                venue_id,
                performer_ids: vec![],
                starts_at: "2030-06-01T20:00:00Z".into(),
                hold_ttl_s: Some(HOLD_TTL_S),
                // A buyer may buy many times in a run: a cap above the event's
                // size (plus the largest hold; at most the largest cap, which no
                // venue exceeds) never refuses, as the peers have no caps; it is
                // still checked and counted on every hold.
                per_user_cap: Some((seats + 4).min(boxoffice_raft::command::PER_USER_CAP_MAX)),
            })
            .collect();
        for chunk in all.chunks(400) {
            ids.extend(
                self.admin
                    .create_events(chunk)
                    .await?
                    .events
                    .iter()
                    .map(|e| e.event_id),
            );
        }
        Ok(ids)
    }

    pub(super) async fn hold(&self, worker: usize, event: u64, seats: &[u32]) -> HoldOutcome {
        match self
            .buyer(worker)
            .hold(event, Selection::Seats(seats.to_vec()))
            .await
        {
            Ok(h) => HoldOutcome::Granted(h.hold_id),
            Err(e) if e.code() == Some(ProblemCode::SeatUnavailable) => HoldOutcome::Conflict,
            Err(e) => HoldOutcome::Failed(e.to_string()),
        }
    }

    pub(super) async fn confirm(&self, worker: usize, hold: &str) -> ConfirmOutcome {
        match self.buyer(worker).confirm(hold, "bench").await {
            Ok(_) => ConfirmOutcome::Confirmed,
            // Refused for certain, or maybe applied: the code says which.
            Err(e) if !e.may_have_applied() => ConfirmOutcome::Refused(e.to_string()),
            Err(e) => ConfirmOutcome::Unknown(e.to_string()),
        }
    }

    pub(super) async fn sold_seats(&self, event: u64) -> anyhow::Result<Vec<u32>> {
        let map = self.admin.seats(event, Consistency::Linearizable).await?;
        Ok(map
            .seats
            .iter()
            .filter(|s| s.status == SeatStatus::Sold)
            .map(|s| s.seat_id)
            .collect())
    }
}
